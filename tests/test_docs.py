"""Tests that fail when something is undocumented: config options, CLI commands, event types."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from gateway.cli import build_parser
from gateway.config import Config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXAMPLE = yaml.safe_load((ROOT / "config.example.yaml").read_text())


def model_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        path = prefix + name
        paths.add(path)
        for inner in _models_in(field.annotation):
            paths |= model_paths(
                inner, path + ("[]." if _is_list(field.annotation) else ".*." if _is_dict(field.annotation) else ".")
            )
    return paths


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list


def _is_dict(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict


def yaml_paths(value: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            paths.add(prefix + str(key))
            paths |= yaml_paths(inner, prefix + str(key) + ".")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                paths |= yaml_paths(item, prefix.rstrip(".") + "[].")
    return paths


def test_the_example_config_is_valid() -> None:
    Config.model_validate(EXAMPLE)


def test_every_config_option_is_in_the_example_config() -> None:
    documented = yaml_paths(EXAMPLE)
    # agents.<profile>.tools: the example's profile is "default"
    documented |= {p.replace("agents.default.", "agents.*.") for p in documented}
    free_form = ("http_tools[].input_schema.", "agents.*.tools.", "upstreams[].env.", "http_tools[].headers.")
    missing = sorted(p for p in model_paths(Config) if p not in documented)
    extra = sorted(p for p in documented - model_paths(Config) if not p.startswith(free_form) and "default" not in p)
    assert missing == []
    assert extra == []


def commands() -> list[str]:
    found: list[str] = []

    def walk(parser: Any, prefix: str) -> None:
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs:
            found.append(prefix)
        for sub in subs:
            for name, child in sub.choices.items():
                walk(child, f"{prefix} {name}")

    walk(build_parser(), "keyhand")
    return found


@pytest.mark.parametrize("command", commands())
def test_every_cli_command_is_in_the_readme(command: str) -> None:
    assert command in README


def emitted_event_types() -> set[str]:
    """Every literal event type passed to an emit/append call anywhere in the code."""
    calls = {"emit", "append", "append_in", "_emit"}
    shape = re.compile(r"^[a-z_]+\.[a-z_]+$")
    found: set[str] = set()
    for package in ("gateway", "tools", "vault"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name not in calls:
                    continue
                for arg in node.args[:2]:
                    for const in ast.walk(arg):
                        if (
                            isinstance(const, ast.Constant)
                            and isinstance(const.value, str)
                            and shape.match(const.value)
                        ):
                            found.add(const.value)
    return found


def test_every_event_type_the_code_writes_is_in_the_readme() -> None:
    types_ = emitted_event_types()
    assert {"tool.call", "tool.result", "sandbox.lost", "credential.refreshed"} <= types_
    missing = sorted(t for t in types_ if f"`{t}`" not in README and f"`{t.split('.')[0]}.*`" not in README)
    assert missing == []
