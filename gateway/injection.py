"""Putting a vault secret into an outbound request at send time, and nowhere else.

:class:`VaultAuth` is an ``httpx2.Auth`` (the encode/httpx auth-flow shape): it
asks for the current secret when the request is sent, sets the bound header,
sends, and on a 401 asks for a refreshed secret and retries once. The client
that carries it is built by the gateway for the upstream alone, so whatever
token the caller used to reach Keyhand is never on it (no token passthrough);
the flow also drops any ``Authorization`` header that is not the one it sets.
``gateway/upstream_http.py`` sends an upstream's calls with the same :meth:`VaultAuth.headers`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

import httpx2

SecretFn = Callable[[bool], Awaitable[str]]
"""``fetch(force_refresh) -> header value``; raises when no usable credential exists."""


@dataclass
class VaultAuth(httpx2.Auth):
    fetch: SecretFn
    header: str = "Authorization"

    async def headers(self, *, refresh: bool = False) -> dict[str, str]:
        """The bound header with the current secret, fetched now; ``refresh=True`` after a 401."""
        return {self.header: await self.fetch(refresh)}

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        request.headers.pop("authorization", None)
        request.headers.update(await self.headers())
        response = yield request
        if response.status_code == 401:
            request.headers.update(await self.headers(refresh=True))
            yield request

    def sync_auth_flow(self, request: httpx2.Request) -> None:  # type: ignore[override]  # async-only by design
        raise RuntimeError("VaultAuth only works with httpx2.AsyncClient")


def render(fmt: str, secret: str, username: str | None = None) -> str:
    """A header value from a format with ``{secret}`` (and, for basic auth, ``{username}``)."""
    return fmt.replace("{secret}", secret).replace("{username}", username or "")
