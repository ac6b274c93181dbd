"""Unit names are spelled in one place, and only for a string that is a model id: a unit name is
also a file under the unit directories and an argument to systemctl."""

from __future__ import annotations

import pytest

from sparkctl.units.names import DAEMON_UNITS, container_name, service_name, socket_name


def test_a_model_id_names_its_units() -> None:
    assert service_name("gpt-oss-20b") == "sparkctl-gpt-oss-20b.service"
    assert socket_name("qwen3.5-0.8b") == "sparkctl-qwen3.5-0.8b.socket"
    assert container_name("a_b") == "sparkctl-a_b.container"
    assert DAEMON_UNITS == ("sparkctl.service", "sparkctl.socket")


@pytest.mark.parametrize(
    "bad", ["", "../etc/passwd", "a/b", "A", "x.service y", "a\n", "-a", "models", "chat-proxy", "a" * 65]
)
def test_anything_else_is_refused(bad: str) -> None:
    for name in (service_name, socket_name, container_name):
        with pytest.raises(ValueError, match="not a model id"):
            name(bad)
