"""The gateway's exceptions, each mapped to one HTTP status at the API boundary.

    KeyhandError                 base; never carries a secret value in its message
    ├── ConfigError              the config file or an option is invalid (exit 2 at start)
    ├── StartupError             the gateway cannot start here (missing bwrap, port, vault key)
    └── ApiError                 something a client did; has ``status`` and ``code``
        ├── BadRequest           400 malformed or invalid input
        ├── Unauthorized         401 no or unknown API key
        ├── Forbidden            403 authenticated, but not allowed (admin only)
        ├── NotFound             404 no such thing visible to this principal
        ├── Conflict             409 the thing exists already / wrong state
        └── TooLarge             413 the request body is over the limit

A tool failure is not an exception at this level: it is a ``ToolResult`` with
``is_error`` (see ``tools/base.py``).
"""

from __future__ import annotations


class KeyhandError(Exception):
    """Base class of every error Keyhand raises on purpose."""


class ConfigError(KeyhandError):
    """The configuration is invalid; the message names the option and what to do."""


class StartupError(KeyhandError):
    """The gateway cannot start; the message says why and how to fix it."""


class ApiError(KeyhandError):
    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class TooLarge(ApiError):
    status = 413
    code = "too_large"
