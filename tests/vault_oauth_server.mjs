// A real OAuth 2.0 server for the vault tests: oauth2-mock-server, plus the two things it lacks.
//   * it counts every HTTP request by path and every token response by grant type (GET /_test/stats),
//   * it remembers the refresh tokens it issued and answers invalid_grant to any other one
//     (refresh tokens rotate on use), and can fail the next token request (POST /_test/fail-next?status=503).
// Usage: node vault_oauth_server.mjs <path to oauth2-mock-server/dist/index.mjs>
// Prints one JSON line {"url": ...} when listening on 127.0.0.1 (port chosen by the OS); exits when stdin closes.
import http from "node:http";
import { pathToFileURL } from "node:url";

const { OAuth2Issuer, OAuth2Service, Events } = await import(pathToFileURL(process.argv[2]).href);

const issuer = new OAuth2Issuer();
await issuer.keys.generate("RS256");
const service = new OAuth2Service(issuer);
const requests = {};
const grants = {};
const validRefresh = new Set();
let failNext = 0;

service.on(Events.BeforeResponse, (response, req) => {
  const grant = req.body.grant_type;
  grants[grant] = (grants[grant] ?? 0) + 1;
  if (failNext) {
    response.statusCode = failNext;
    response.body = { error: "temporarily_unavailable" };
    failNext = 0;
    return;
  }
  if (grant === "refresh_token") {
    if (!validRefresh.delete(req.body.refresh_token)) {
      response.statusCode = 400;
      response.body = { error: "invalid_grant", error_description: "refresh token unknown or already used" };
      return;
    }
  }
  if (response.body.refresh_token) validRefresh.add(response.body.refresh_token);
});

const server = http.createServer((req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  requests[path] = (requests[path] ?? 0) + 1;
  if (path === "/_test/stats") {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ requests, grants }));
  } else if (path === "/_test/fail-next") {
    failNext = Number(new URL(req.url, "http://x").searchParams.get("status") ?? 503);
    res.end("ok");
  } else {
    service.requestHandler(req, res);
  }
});
server.keepAliveTimeout = 1000;
server.listen(0, "127.0.0.1", () => {
  issuer.url = `http://127.0.0.1:${server.address().port}`;
  process.stdout.write(JSON.stringify({ url: issuer.url }) + "\n");
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
