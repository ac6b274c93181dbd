"""`sparkctl install --user`: a per-user stack on the user's own systemd manager (here root's
user manager in the sandbox, with its session bus), socket-activated like the system one."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import openai
import pytest

from sparkctl.sandbox.box import Box
from sparkctl.sandbox.weights import write_placeholder
from tests.integration.conftest import SPARKCTL, emulated

PORT = 28930
USER_ENV = {
    "XDG_RUNTIME_DIR": "/run/user/0",
    "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/0/bus",
    "HOME": "/root",
}


@pytest.fixture
def user_manager(box: Box) -> Iterator[Box]:
    box.systemctl("start", "user@0.service")
    yield box
    box.systemctl("stop", "user@0.service", check=False)


def test_a_user_install_serves_from_the_users_own_manager(user_manager: Box) -> None:
    box = user_manager
    base = box.path / "user-install"
    cat = base / "models"
    emulated(cat, "u-alpha", 28931, load_time=0.2, serve={"idle_timeout": "5m"})
    write_placeholder(base / "hf", "org/model")
    config = base / "sparkctl.toml"
    config.write_text(
        f'[gateway]\nlisten = ["127.0.0.1:{PORT}"]\napi_keys_file = "{base}/api-keys"\n'
        f'[catalog]\ndirs = ["{cat}"]\n'
        '[systemd]\nbus = "user"\nquadlet_dir = "/root/.config/containers/systemd"\n'
        'unit_dir = "/root/.config/systemd/user"\n'
        f'[runtime]\nsparkctl = "{SPARKCTL}"\nhf_cache = "{base}/hf"\ncompile_cache = "{base}/cc"\n'
    )
    try:
        proc = box.run(SPARKCTL, "--config", str(config), "install", "--user", env=USER_ENV, timeout=300)
        key = proc.stdout.strip()
        assert key.startswith("sk-spark-"), proc.stderr
        assert "loginctl enable-linger" in proc.stderr
        user = ["env", *(f"{k}={v}" for k, v in USER_ENV.items()), "systemctl", "--user"]
        assert box.run(*user, "is-enabled", "sparkctl.socket").stdout.strip() == "enabled"
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(
            model="u-alpha", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 3
        assert box.run(*user, "is-active", "sparkctl.service", "sparkctl-u-alpha.service").stdout.split() == [
            "active",
            "active",
        ]
        # not in the system manager
        assert box.systemctl("is-active", "sparkctl-u-alpha.service", check=False).stdout.strip() != "active"
        # the CLI talks to the user's daemon over its own socket, as the same user, without a key
        ps = box.run(SPARKCTL, "--config", str(config), "ps", "--json", env=USER_ENV).stdout
        assert '"u-alpha"' in ps and '"ready"' in ps
        out = box.run(SPARKCTL, "--config", str(config), "uninstall", "--user", env=USER_ENV, timeout=120)
        assert "stopped" in out.stderr
        deadline = time.monotonic() + 10
        while box.run(*user, "is-active", "sparkctl-u-alpha.service", check=False).stdout.strip() == "active":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        box.run(
            SPARKCTL, "--config", str(config), "uninstall", "--user", env=USER_ENV, check=False, timeout=120
        )
        shutil.rmtree(base, ignore_errors=True)
        box.run("rm", "-rf", "/root/.config/systemd/user", "/root/.config/containers", check=False)
