"""Where the master key comes from: the OS keyring, an environment variable, or a 0600 file.

Shaped like jaraco/keyring's backends: every source says whether it can work
here and why not (:meth:`KeySource.viable`), and :class:`FailSource` is the
"nothing usable" source whose every call raises an error the user can act on —
a locked vault. There is never a plaintext fallback: a keyring backend that
stores secrets in clear, or none at all, is not viable.

Key material is text: base64url 32-byte keys, one a line (commas also separate),
the first one the primary. More than one key appears only mid-rotation.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vault.crypto import KeySet, decode_keys, encode_keys, generate_key
from vault.errors import InsecureKeyFile, MasterKeyError

KEY_FILE_NAME = "master.key"
KEYRING_SERVICE = "keyhand"
KEYRING_USERNAME = "vault-master-key"
# Backends that answer but do not protect: storing a master key there is a plaintext fallback.
_INSECURE_BACKENDS = {
    "keyring.backends.fail.Keyring",
    "keyring.backends.null.Keyring",
    "keyrings.alt.file.PlaintextKeyring",
    "keyrings.alt.file.EncryptedKeyring",  # asks for a password on a terminal: unusable headless
    "keyrings.alt.Gnome.Keyring",
}


@dataclass(frozen=True, slots=True)
class Viability:
    """Whether a source can provide a key here, and if not, why (a sentence for the user)."""

    ok: bool
    reason: str


class KeySource(Protocol):
    """A place a master key is read from (and, if writable, saved to during rotation)."""

    description: str
    """Safe to log: ``env:VAR``, ``file:/path``, ``keyring:Backend``."""
    notice: str | None
    """Set by :meth:`load` when it did something the operator must know (e.g. created a key)."""

    def viable(self) -> Viability: ...
    def load(self) -> KeySet: ...
    def save(self, keys: KeySet) -> None: ...


class FailSource:
    """No usable source: every call raises the reason, so the vault stays locked and says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.description = "none"
        self.notice: str | None = None

    def viable(self) -> Viability:
        return Viability(False, self.reason)

    def load(self) -> KeySet:
        raise MasterKeyError(self.reason)

    def save(self, keys: KeySet) -> None:
        raise MasterKeyError(self.reason)


class EnvSource:
    """``env:VAR``: the key material is the variable's value. Read-only: keyhand cannot set it."""

    def __init__(self, var: str, environ: Mapping[str, str] | None = None) -> None:
        self.var = var
        self.description = f"env:{var}"
        self.notice: str | None = None
        self._environ = os.environ if environ is None else environ

    def viable(self) -> Viability:
        if self._environ.get(self.var, "").strip():
            return Viability(True, f"environment variable {self.var} is set")
        return Viability(False, f"environment variable {self.var} (vault.master_key: env:{self.var}) is not set")

    def load(self) -> KeySet:
        verdict = self.viable()
        if not verdict.ok:
            raise MasterKeyError(verdict.reason)
        return KeySet(decode_keys(self._environ[self.var], origin=self.description))

    def save(self, keys: KeySet) -> None:
        ids = ", ".join(keys.ids)
        raise MasterKeyError(
            f"keyhand cannot rewrite environment variable {self.var}; to rotate, set it to the new key "
            f"followed by the old one (comma-separated), run the rotation, then drop the old key (ids: {ids})"
        )


class FileSource:
    """``file:PATH``: a key file readable by its owner only (mode 0600 or stricter), never a symlink."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self.create = create
        self.description = f"file:{path}"
        self.notice: str | None = None

    def viable(self) -> Viability:
        if self.path.exists():
            try:
                self._check(os.stat(self.path, follow_symlinks=False))
            except InsecureKeyFile as exc:
                return Viability(False, str(exc))
            return Viability(True, f"key file {self.path} exists and is private")
        if self.create:
            return Viability(True, f"key file {self.path} will be created with mode 0600")
        return Viability(False, f"key file {self.path} does not exist")

    def load(self) -> KeySet:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            if not self.create:
                raise MasterKeyError(
                    f"master key file {self.path} does not exist; create it with "
                    f"`keyhand vault init-key --file {self.path}` or set vault.master_key"
                ) from None
            return self._create()
        except OSError as exc:
            raise MasterKeyError(f"cannot read master key file {self.path}: {exc.strerror}") from None
        with os.fdopen(fd, "r", encoding="ascii", errors="replace") as f:
            self._check(os.fstat(f.fileno()))
            return KeySet(decode_keys(f.read(), origin=self.description))

    def save(self, keys: KeySet) -> None:
        """Replace the file atomically (write a 0600 sibling, fsync, rename) so a crash keeps one."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(encode_keys(keys.material()))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def _create(self) -> KeySet:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = KeySet([generate_key()])
        self.save(keys)
        self.notice = (
            f"created a new vault master key in {self.path} (mode 0600) because no secure OS keyring "
            "is available; back this file up: without it the vault cannot be opened"
        )
        return keys

    def _check(self, st: os.stat_result) -> None:
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            raise InsecureKeyFile(f"master key file {self.path} must be a regular file, not a link")
        if st.st_mode & 0o077:
            mode = oct(stat.S_IMODE(st.st_mode))
            raise InsecureKeyFile(
                f"master key file {self.path} has mode {mode}, so other users may read it; "
                f"refusing to use it. Run `chmod 600 {self.path}`"
            )
        if st.st_uid != os.getuid():
            raise InsecureKeyFile(
                f"master key file {self.path} is owned by uid {st.st_uid}, not by the user running "
                f"keyhand (uid {os.getuid()}); run `chown {os.getuid()} {self.path}`"
            )


class KeyringSource:
    """The OS keyring through ``keyring``, only when its backend actually protects secrets."""

    def __init__(self, *, backend: Any = None, create: bool = True) -> None:
        import keyring

        self._backend = backend if backend is not None else keyring.get_keyring()
        self.create = create
        self.description = f"keyring:{_backend_name(self._backend)}"
        self.notice: str | None = None

    def viable(self) -> Viability:
        backends = list(getattr(self._backend, "backends", [self._backend]))
        weak = [b for b in backends if _backend_name(b) in _INSECURE_BACKENDS or b.priority <= 0]
        if not backends or weak:
            names = ", ".join(_backend_name(b) for b in weak) or "none"
            return Viability(
                False,
                f"no secure OS keyring backend is available (found: {names}); "
                "set vault.master_key to env:VAR or file:PATH",
            )
        return Viability(True, f"OS keyring backend {_backend_name(self._backend)}")

    def load(self) -> KeySet:
        verdict = self.viable()
        if not verdict.ok:
            raise MasterKeyError(verdict.reason)
        material = self._call("get_password", KEYRING_SERVICE, KEYRING_USERNAME)
        if material is None:
            if not self.create:
                raise MasterKeyError(f"the OS keyring has no entry {KEYRING_SERVICE}/{KEYRING_USERNAME}")
            keys = KeySet([generate_key()])
            self.save(keys)
            self.notice = f"created a new vault master key in the OS keyring ({self.description})"
            return keys
        return KeySet(decode_keys(str(material), origin=self.description))

    def save(self, keys: KeySet) -> None:
        self._call("set_password", KEYRING_SERVICE, KEYRING_USERNAME, encode_keys(keys.material()))

    def _call(self, method: str, *args: str) -> Any:
        from keyring.errors import KeyringError

        try:
            return getattr(self._backend, method)(*args)
        except KeyringError as exc:
            raise MasterKeyError(
                f"the OS keyring ({self.description}) refused {method}: {type(exc).__name__}; "
                "unlock it, or set vault.master_key to env:VAR or file:PATH"
            ) from None


def select_source(spec: str | None, home: Path) -> KeySource:
    """The source named by ``vault.master_key``; with none, the embedded default.

    Default: an existing ``$KEYHAND_HOME/master.key``, else a secure OS keyring,
    else a new 0600 key file there (its ``notice`` says so). An explicit spec
    that cannot work gives a :class:`FailSource`, never a weaker fallback.
    """
    if spec is None:
        path = home / KEY_FILE_NAME
        if path.exists():
            return FileSource(path)
        ring = KeyringSource()
        return ring if ring.viable().ok else FileSource(path, create=True)
    kind, _, arg = spec.partition(":")
    if kind == "env" and arg:
        return EnvSource(arg)
    if kind == "file" and arg:
        return FileSource(Path(arg).expanduser())
    if spec == "keyring":
        ring = KeyringSource()
        verdict = ring.viable()
        return ring if verdict.ok else FailSource(verdict.reason)
    # never echo the spec: a user who pasted the key itself there must not see it in a log
    return FailSource("vault.master_key must be one of: keyring, env:VAR, file:PATH")


def _backend_name(backend: Any) -> str:
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
