"""Every error the vault raises, one class per thing a caller can act on.

Messages name the credential, provider, file or variable involved and say what to
do; they never contain a secret value (not even a prefix of one).

    VaultError
    ├── MasterKeyError           the master key cannot be had; the vault stays locked
    │   ├── InsecureKeyFile      a key file readable by others, or owned by someone else
    │   └── WrongMasterKey       the key does not open this vault's check value
    ├── DecryptionError          a sealed value failed to open: tampered or moved to another row
    │   └── UnknownKeyId         sealed under a master key that is not configured (mid-rotation?)
    ├── NotFound                 no credential / provider by that name in the caller's scope
    ├── AlreadyExists            a credential / provider by that name already exists there
    ├── InvalidInput             a value the caller passed cannot be stored as given
    ├── AuthorizationStateError  an OAuth `state` that is unknown, replayed or expired
    └── TokenError               the provider's token endpoint did not give us a token
        ├── NeedsReauth          the grant is gone (RFC 6749 §5.2 invalid_grant): reconnect
        └── TokenEndpointError   any other failure (unreachable, 5xx, error code, bad body)
"""

from __future__ import annotations


class VaultError(Exception):
    """Base class of every vault error."""


class MasterKeyError(VaultError):
    """The master key is missing, unreadable or unusable; nothing can be opened."""


class InsecureKeyFile(MasterKeyError):
    """A master key file whose permissions or owner would let someone else read it."""


class WrongMasterKey(MasterKeyError):
    """The configured master key is not the one this vault was sealed with."""


class DecryptionError(VaultError):
    """A sealed value did not authenticate (AES-GCM tag mismatch or unknown key id)."""


class UnknownKeyId(DecryptionError):
    """A sealed value names a master key id this process does not hold."""


class NotFound(VaultError):
    """No credential or provider by that name is visible to the caller."""


class AlreadyExists(VaultError):
    """A credential or provider by that name already exists in that scope."""


class InvalidInput(VaultError, ValueError):
    """A value the caller passed cannot be stored as given (empty secret, bad header...)."""


class AuthorizationStateError(VaultError):
    """An OAuth callback whose `state` is unknown, already used or expired (RFC 6749 §10.12)."""


class TokenError(VaultError):
    """The token endpoint did not give us a usable token."""

    def __init__(self, message: str, *, credential: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.credential = credential
        self.code = code


class NeedsReauth(TokenError):
    """The credential's grant is gone (revoked, expired, invalid_grant); it must be reconnected."""


class TokenEndpointError(TokenError):
    """The token endpoint failed for another reason; retrying later may work."""
