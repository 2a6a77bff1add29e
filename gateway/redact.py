"""Scrub secret values out of anything that leaves the gateway or reaches the ledger.

A secret can come back encoded: an upstream that base64s a header, URL-encodes
a query, hex-dumps a buffer or JSON-escapes a string. For each secret we build
every such form (plain, base64, base64url with and without padding, the stable
core of base64 at each of the three byte alignments so a secret embedded in a
longer encoded string is still found, URL-encoded, lower/upper hex, JSON-escaped)
and replace all of them with ``[REDACTED:<credential name>]`` in one pass of one
compiled regular expression, longest form first.

Secrets shorter than :data:`MIN_SECRET_LEN` are not scrubbed (they would match
everywhere); the vault refuses to store them.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

MIN_SECRET_LEN = 6
_MIN_FORM_LEN = 6


def _b64_cores(raw: bytes) -> set[str]:
    forms: set[str] = set()
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw).decode()
        start = 4 if k else 0
        end = 4 * ((k + len(raw)) // 3)
        core = enc[start:end]
        if len(core) >= 8:
            forms.add(core)
            forms.add(core.replace("+", "-").replace("/", "_"))
    return forms


def encoded_forms(secret: str) -> set[str]:
    """Every representation of ``secret`` the redactor looks for."""
    raw = secret.encode()
    forms = {secret, raw.hex(), raw.hex().upper(), json.dumps(secret)[1:-1]}
    forms.add(urllib.parse.quote(secret, safe=""))
    forms.add(urllib.parse.quote_plus(secret, safe=""))
    std = base64.b64encode(raw).decode()
    url = base64.urlsafe_b64encode(raw).decode()
    forms.update({std, std.rstrip("="), url, url.rstrip("=")})
    forms.update(_b64_cores(raw))
    return {f for f in forms if len(f) >= _MIN_FORM_LEN}


class Redactor:
    """Replaces every known form of the given secrets; cheap to apply, built once per secret set."""

    def __init__(self, secrets: Iterable[tuple[str, str]]) -> None:
        names: dict[str, str] = {}
        for name, value in secrets:
            if len(value) < MIN_SECRET_LEN:
                continue
            for form in encoded_forms(value):
                names.setdefault(form, name)
        self._names = names
        ordered = sorted(names, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, value: str) -> str:
        if self._pattern is None:
            return value
        return self._pattern.sub(lambda m: f"[REDACTED:{self._names[m.group(0)]}]", value)

    def value(self, obj: Any) -> Any:
        """Scrub strings anywhere inside a JSON-like value (keys included)."""
        if self._pattern is None:
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.text(str(k)): self.value(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        return obj


NO_SECRETS = Redactor(())


class LogScrubber(logging.Filter):
    """A last line of defence for "no secret in a log line": scrub every secret any call has used.

    Installed on the root handlers at start. Every redactor the gateway builds for a
    call feeds its secrets in, so any value that could have reached a log line through
    a call is known here by then. Log lines are formatted once, scrubbed, and passed on.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pairs: dict[str, str] = {}
        self._redactor = NO_SECRETS

    def learn(self, pairs: Iterable[tuple[str, str]]) -> None:
        new = {value: name for name, value in pairs if value not in self._pairs}
        if new:
            self._pairs.update(new)
            self._redactor = Redactor((name, value) for value, name in self._pairs.items())

    def filter(self, record: logging.LogRecord) -> bool:
        if self._redactor:
            message = record.getMessage()
            scrubbed = self._redactor.text(message)
            if scrubbed != message:
                record.msg, record.args = scrubbed, None
            if record.exc_info and record.exc_info[1] is not None:
                text = logging.Formatter().formatException(record.exc_info)
                record.exc_info, record.exc_text = None, self._redactor.text(text)
        return True

    def install(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)


LOG_SCRUBBER = LogScrubber()
