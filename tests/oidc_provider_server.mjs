// A real OpenID Connect authorization server for the tests: oidc-provider (panva), configured small.
//   * one static confidential client (client_secret_basic) with the redirect URIs given on the command line,
//   * PKCE S256 required for every authorization request,
//   * no login page: GET /interaction/:uid logs in the account "alice" at once, and every grant is
//     consented to (loadExistingGrant), so a test follows the redirects as a browser would,
//   * GET /_test/token-errors lists the token endpoint's refusals (error, description and the internal
//     detail oidc-provider keeps out of the response), so a test can tell which rule refused a request.
// Usage: node oidc_provider_server.mjs <oidc-provider/lib/index.js> <client_id> <client_secret> <redirect_uri>...
// Prints one JSON line {"url": ...} when listening on 127.0.0.1 (port chosen by the OS); exits when stdin closes.
import { generateKeyPairSync } from "node:crypto";
import http from "node:http";
import { pathToFileURL } from "node:url";

const [providerModule, clientId, clientSecret, ...redirectUris] = process.argv.slice(2);
const { default: Provider } = await import(pathToFileURL(providerModule).href);

const server = http.createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const signingKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" });
const tokenErrors = [];

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
      id_token_signed_response_alg: "ES256",
    },
  ],
  jwks: { keys: [{ ...signingKey, alg: "ES256", use: "sig", kid: "test" }] },
  cookies: { keys: ["oidc-provider-test-cookie-key"] },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false }, revocation: { enabled: true } },
  scopes: ["openid", "offline_access"],
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  async loadExistingGrant(ctx) {
    const { client, session, params } = ctx.oidc;
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope(String(params.scope ?? "openid"));
    await grant.save();
    return grant;
  },
});
provider.on("grant.error", (_ctx, err) => {
  tokenErrors.push({ error: err.error, error_description: err.error_description, error_detail: err.error_detail });
});

const oidc = provider.callback();
server.on("request", async (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  if (path === "/_test/token-errors") {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(tokenErrors));
  } else if (path.startsWith("/interaction/")) {
    try {
      await provider.interactionFinished(req, res, { login: { accountId: "alice" } }, { mergeWithLastSubmission: false });
    } catch (err) {
      res.statusCode = 400;
      res.end(`interaction failed: ${err.message}`);
    }
  } else {
    oidc(req, res);
  }
});
server.keepAliveTimeout = 1000;
process.stdout.write(JSON.stringify({ url: issuer }) + "\n");
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
