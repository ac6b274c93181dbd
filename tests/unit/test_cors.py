"""`gateway.cors_origins`: exact origins, patterns, "*" and the reference stack's "local" set."""

from __future__ import annotations

import pytest

from sparkctl.errors import ConfigError
from sparkctl.gateway.cors import OriginMatcher
from sparkctl.settings import Settings


@pytest.mark.parametrize(
    ("entries", "origin", "allowed"),
    [
        (["http://localhost:3000"], "http://localhost:3000", True),
        (["http://localhost:3000"], "http://localhost:3001", False),
        (["http://localhost:*"], "http://localhost:5173", True),
        (["http://localhost:*"], "http://localhost", False),
        (["http://localhost:*"], "http://localhost:1/x", False),  # `*` never spans a '/'
        (["http://localhost:*"], "http://localhost.evil.example:80", False),
        (["vscode-webview://*"], "vscode-webview://1abc2def", True),
        (["local"], "http://127.0.0.1:8080", True),
        (["local"], "http://localhost", True),
        (["local"], "vscode-webview://xyz", True),
        (["local"], "https://localhost", False),
        (["local"], "http://localhost.evil.example", False),
        (["local"], "http://10.0.0.2:3000", False),
        (["*"], "https://anything.example", True),
        ([], "http://localhost", False),
    ],
)
def test_an_origin_is_allowed_only_as_configured(entries: list[str], origin: str, allowed: bool) -> None:
    assert OriginMatcher(entries)(origin) is allowed


def test_no_entries_means_no_cors_at_all() -> None:
    assert not OriginMatcher([]) and OriginMatcher(["local"])


@pytest.mark.parametrize("entry", ["localhost:3000", "http://localhost:3000/", "http://a b", "*.example", ""])
def test_an_entry_that_is_no_origin_is_a_config_error(entry: str) -> None:
    with pytest.raises((ConfigError, ValueError), match="must be an origin"):
        Settings.model_validate({"gateway": {"cors_origins": [entry]}})
