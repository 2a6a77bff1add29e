"""The redactor finds a secret in every encoding an upstream might send it back in, and logs are scrubbed too."""

from __future__ import annotations

import base64
import io
import json
import logging
import urllib.parse

import pytest

from gateway.redact import LogScrubber, Redactor

SECRET = "s3cr3t-Token_With/Slash+Plus=="


@pytest.mark.parametrize(
    "encoded",
    [
        SECRET,
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
        urllib.parse.quote(SECRET, safe=""),
        urllib.parse.quote_plus(SECRET),
        SECRET.encode().hex(),
        SECRET.encode().hex().upper(),
        json.dumps(SECRET)[1:-1],
    ],
)
def test_every_encoding_of_a_secret_is_replaced_by_a_marker_naming_it(encoded: str) -> None:
    out = Redactor([("github", SECRET)]).text(f"before {encoded} after")
    assert out == "before [REDACTED:github] after"


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"user=alice;token="])
def test_a_secret_inside_a_longer_base64_string_is_found_at_any_alignment(prefix: bytes) -> None:
    blob = base64.b64encode(prefix + SECRET.encode() + b";end").decode()
    out = Redactor([("github", SECRET)]).text(blob)
    assert "[REDACTED:github]" in out
    assert base64.b64encode(SECRET.encode()).decode()[4:-4] not in out


def test_structured_values_are_scrubbed_keys_included() -> None:
    value = {"token": SECRET, SECRET: [1, {"nested": f"Bearer {SECRET}"}]}
    assert SECRET not in json.dumps(Redactor([("x", SECRET)]).value(value))


def test_short_values_are_not_treated_as_secrets() -> None:
    assert Redactor([("pin", "1234")]).text("1234 stays") == "1234 stays"


def test_log_lines_are_scrubbed_of_every_secret_a_call_used() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    scrubber = LogScrubber()
    handler.addFilter(scrubber)
    logger = logging.getLogger("test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        scrubber.learn([("github", SECRET)])
        logger.warning("upstream said %s", f"bad token {SECRET}")
        try:
            raise ValueError(f"rejected {SECRET}")
        except ValueError:
            logger.exception("call failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert SECRET not in text
    assert text.count("[REDACTED:github]") == 2
