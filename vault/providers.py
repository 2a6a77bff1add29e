"""OAuth 2.0 providers: endpoints and client id in clear, the client secret sealed like a credential."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from vault import rows
from vault.errors import AlreadyExists, DecryptionError, NotFound
from vault.models import ProviderConfig, ProviderInfo
from vault.secret import Secret

if TYPE_CHECKING:
    from vault.store import VaultStore


class ProviderTable:
    """CRUD over ``vault_providers`` for the admin API; reached as ``store.providers``."""

    def __init__(self, store: VaultStore) -> None:
        self._store = store
        self._secrets: tuple[int, tuple[Secret, ...]] | None = None

    async def add(self, config: ProviderConfig, client_secret: Secret | None = None) -> ProviderInfo:
        """Store a new provider. Raises AlreadyExists, InvalidInput."""
        columns = rows.provider_columns(config)
        provider_id, now = "prov_" + secrets.token_hex(8), time.time()
        columns |= {"id": provider_id, "created_at": now, "updated_at": now}
        columns |= self._sealed(provider_id, client_secret)
        names = ", ".join(columns)
        sql = f"INSERT INTO vault_providers ({names}) VALUES ({', '.join('?' * len(columns))})"

        async def insert(c: Any) -> None:
            if await (await c.execute("SELECT 1 FROM vault_providers WHERE name = ?", (config.name,))).fetchone():
                raise AlreadyExists(f"provider {config.name!r} already exists")
            await c.execute(sql, tuple(columns.values()))

        await self._store.write(insert)
        return await self.get(config.name)

    async def update(self, config: ProviderConfig, client_secret: Secret | None = None) -> ProviderInfo:
        """Replace a provider's settings; ``client_secret=None`` keeps the stored one. Raises NotFound."""
        current = await self.get(config.name)
        columns = rows.provider_columns(config) | {"updated_at": time.time()}
        if client_secret is not None:
            columns |= self._sealed(current.id, client_secret)
        sets = ", ".join(f"{k} = ?" for k in columns)
        sql = f"UPDATE vault_providers SET {sets} WHERE id = ?"
        await self._store.write(lambda c: c.execute(sql, (*columns.values(), current.id)))
        return await self.get(config.name)

    async def delete(self, name: str) -> ProviderInfo:
        """Delete a provider (its credentials stay, and fail to refresh). Raises NotFound."""
        current = await self.get(name)
        await self._store.write(lambda c: c.execute("DELETE FROM vault_providers WHERE id = ?", (current.id,)))
        return current

    async def get(self, name: str) -> ProviderInfo:
        found = await self._store.fetch("SELECT * FROM vault_providers WHERE name = ?", (name,))
        if not found:
            raise NotFound(f"no OAuth provider {name!r}; add it in the config or through the admin API")
        return rows.provider_info(found[0])

    async def list(self) -> list[ProviderInfo]:
        return [rows.provider_info(r) for r in await self._store.fetch("SELECT * FROM vault_providers ORDER BY name")]

    async def client_secret(self, name: str) -> tuple[ProviderInfo, Secret | None]:
        """The provider and its opened client secret, for token endpoint calls."""
        found = await self._store.fetch("SELECT * FROM vault_providers WHERE name = ?", (name,))
        if not found:
            raise NotFound(f"no OAuth provider {name!r}; add it in the config or through the admin API")
        info, env = rows.provider_info(found[0]), rows.envelope_of(found[0])
        if env is None:
            return info, None
        opened = self._store.open_sealed(rows.PROVIDERS_TABLE, info.id, None, env)
        return info, Secret(opened["client_secret"])

    async def client_secrets(self) -> tuple[Secret, ...]:
        """Every provider's client secret, for the redactor (cached per vault generation)."""
        generation = await self._store._generation()
        if self._secrets is None or self._secrets[0] != generation:
            found: list[Secret] = []
            for info in await self.list():
                try:
                    secret = (await self.client_secret(info.name))[1]
                except DecryptionError:
                    continue
                if secret is not None:
                    found.append(secret)
            self._secrets = (generation, tuple(found))
        return self._secrets[1]

    def _sealed(self, provider_id: str, client_secret: Secret | None) -> dict[str, Any]:
        if client_secret is None:
            return {"key_id": None, "wrapped_key": None, "ciphertext": None}
        rows.check_secret_text(client_secret.reveal(), "client secret")
        env = self._store.seal(rows.PROVIDERS_TABLE, provider_id, None, {"client_secret": client_secret})
        return {"key_id": env.key_id, "wrapped_key": env.wrapped_key, "ciphertext": env.ciphertext}
