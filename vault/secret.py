"""A secret value as a type: it prints as ``****`` and has one way out, :meth:`Secret.reveal`.

Grep for ``.reveal()`` to find every place a plaintext secret is handled. A
``Secret`` refuses to be pickled or copied into another process by accident, and
``json.dumps`` rejects it like any unknown object; comparison is constant-time.
"""

from __future__ import annotations

import hmac
from typing import Any, NoReturn


class Secret:
    """An opaque string that never shows itself in ``repr``, ``str``, f-strings or logs."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the plaintext. The one door: keep its uses few and greppable."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    def __str__(self) -> str:
        return "****"

    def __format__(self, spec: str) -> str:
        return "****"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("a Secret cannot be pickled; call .reveal() deliberately if it must leave")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self
