"""Where a running demo is (tools/demo_locator.py): the record it writes, what makes a record
stale or untrusted, which daemon an admin command describes (the precedence rules), and the
command line reaching the demo — through the real click group, with the step into the sandbox
recorded instead of run."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparkctl import settings as settings_module
from sparkctl.cli import cli
from sparkctl.sandbox.procs import proc_start
from sparkctl.tools import demo_locator
from sparkctl.tools.demo_locator import INSIDE_ENV, Choice, Demo, choose, command_inside, read, remove, write

RUN_INSIDE = demo_locator.run_inside


def demo_record(tmp_path: Path, *, pid: int | None = None, started: int | None = None) -> Demo:
    pid = os.getpid() if pid is None else pid
    return Demo(
        pid=pid,
        started=proc_start(pid) if started is None else started,
        listen="127.0.0.1:28999",
        config=tmp_path / "demo" / "sparkctl.toml",
        box=tmp_path / "box",
        sparkctl=Path("/opt/venv/bin/sparkctl"),
    )


@pytest.fixture
def locator(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    return run / "sparkctl-demo" / "demo.json"


def gone_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# ------------------------------------------------------------------------------- the record
def test_the_record_is_written_for_root_alone_and_read_back(tmp_path: Path, locator: Path) -> None:
    demo = demo_record(tmp_path)
    write(demo, locator)
    assert locator.stat().st_mode & 0o777 == 0o600
    assert not locator.parent.stat().st_mode & 0o022
    assert read(locator) == demo
    assert demo.url == "http://127.0.0.1:28999" and demo.port == 28999
    assert Demo.from_json(demo.to_json()) == demo


def test_a_record_whose_demo_is_gone_is_ignored_and_removed(tmp_path: Path, locator: Path) -> None:
    write(demo_record(tmp_path, pid=gone_pid()), locator)
    assert read(locator) is None
    assert not locator.exists()
    # the pid runs, but it is another process now (a reused pid): its start time differs
    write(demo_record(tmp_path, started=1), locator)
    assert read(locator) is None
    assert not locator.exists()


def test_a_malformed_record_is_removed_and_a_missing_one_is_none(tmp_path: Path, locator: Path) -> None:
    assert read(locator) is None
    wrong_pid = '{"pid": "x", "started": 1, "listen": "a:1", "config": "/c", "box": "/b", "sparkctl": "/s"}'
    for text in ("", "[]", '{"pid": 1}', wrong_pid, wrong_pid.replace('"x"', "1").replace('"/c"', '"c"')):
        locator.parent.mkdir(exist_ok=True)
        locator.write_text(text)
        assert read(locator) is None, text
        assert not locator.exists(), text


def test_a_record_others_may_write_is_not_trusted(tmp_path: Path, locator: Path) -> None:
    demo = demo_record(tmp_path)
    write(demo, locator)
    locator.chmod(0o622)  # anyone could have written what root would run
    assert read(locator) is None
    assert locator.exists()  # not ours to judge: left alone
    locator.chmod(0o600)
    locator.parent.chmod(0o777)
    assert read(locator) is None
    locator.parent.chmod(0o755)
    assert read(locator) == demo


def test_a_demo_removes_its_own_record_only(tmp_path: Path, locator: Path) -> None:
    mine, later = demo_record(tmp_path), demo_record(tmp_path, started=1)
    write(later, locator)
    remove(mine, locator)
    assert locator.exists()
    write(mine, locator)
    remove(mine, locator)
    assert not locator.exists()
    remove(mine, locator)  # idempotent


# ---------------------------------------------------------------------------- the precedence
@pytest.mark.parametrize(
    ("explicit", "env", "installed", "reached", "note"),
    [
        # 5. nothing else said: the running demo
        (None, {}, None, True, "(the running demo at http://127.0.0.1:28999)"),
        # 1. inside the demo already
        (None, {INSIDE_ENV: "http://127.0.0.1:28999"}, None, False, None),
        # 2. an explicit daemon URL
        (None, {"SPARKCTL_URL": "http://127.0.0.1:8009"}, None, False, None),
        # 3. an explicit configuration of this host …
        (Path("/etc/other.toml"), {}, None, False, None),
        (None, {"SPARKCTL_CONFIG": "/etc/other.toml"}, None, False, None),
        # … unless it is the demo's
        ("demo", {}, None, True, "(the running demo at http://127.0.0.1:28999)"),
        # 4. an installed configuration: this host, and a note naming the demo
        (None, {}, Path("/etc/sparkctl/sparkctl.toml"), False, "this host's sparkctl, configured by"),
        # an empty variable is no setting
        (None, {"SPARKCTL_CONFIG": "", "SPARKCTL_URL": ""}, None, True, "(the running demo at"),
    ],
)
def test_which_daemon_an_admin_command_describes(
    tmp_path: Path,
    explicit: Path | str | None,
    env: dict[str, str],
    installed: Path | None,
    reached: bool,
    note: str | None,
) -> None:
    demo = demo_record(tmp_path)
    given = demo.config if explicit == "demo" else explicit
    assert given is None or isinstance(given, Path)
    choice = choose(given, env, installed, demo)
    assert (choice.demo is demo) is reached
    assert (choice.note is None) if note is None else (choice.note is not None and note in choice.note)
    assert choose(given, env, installed, None) == Choice(None, None)  # no demo: this host, silently


def test_an_installed_host_names_the_demo_and_how_to_reach_it(tmp_path: Path) -> None:
    demo = demo_record(tmp_path)
    note = choose(None, {}, Path("/etc/sparkctl/sparkctl.toml"), demo).note
    assert note == (
        "(this host's sparkctl, configured by /etc/sparkctl/sparkctl.toml; the demo running at "
        f"http://127.0.0.1:28999 is reached with --config {demo.config})"
    )


def test_the_command_inside_the_box() -> None:
    demo = demo_record(Path("/x"))
    assert demo.box == Path("/x/box")
    assert command_inside(demo, ["models", "list", "--json"], 4242) == [
        *("nsenter", "-t", "4242", "-m", "-u", "-i", "-n", "-p", "-C", "--"),
        *("/opt/venv/bin/sparkctl", "--config", "/x/demo/sparkctl.toml", "models", "list", "--json"),
    ]


# -------------------------------------------------------------------- through the command line
class Reached:
    """Stands in for `run_inside` (which needs a running box): records what would run there."""

    def __init__(self, code: int = 0) -> None:
        self.code = code
        self.calls: list[tuple[Demo, list[str]]] = []

    def __call__(self, demo: Demo, args: Sequence[str]) -> int:
        self.calls.append((demo, list(args)))
        return self.code


@pytest.fixture
def running(tmp_path: Path, locator: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Demo, Reached]:
    """A demo's record in place, no installed configuration, no overrides in the environment."""
    demo = demo_record(tmp_path)
    demo.config.parent.mkdir(parents=True)
    demo.config.write_text(f'[catalog]\ndirs = ["{tmp_path / "demo-models"}"]\n')
    write(demo, locator)
    reached = Reached(code=3)
    monkeypatch.setattr(demo_locator, "LOCATOR", locator)
    monkeypatch.setattr(demo_locator, "run_inside", reached)
    monkeypatch.setattr(settings_module, "DEFAULT_CONFIG", tmp_path / "etc" / "sparkctl.toml")
    for name in ("SPARKCTL_CONFIG", "SPARKCTL_URL", "SPARKCTL_API_KEY", INSIDE_ENV):
        monkeypatch.delenv(name, raising=False)
    return demo, reached


@pytest.mark.parametrize(
    "argv",
    [
        ["ps"],
        ["ps", "-a", "--json"],
        ["start", "demo-chat", "--no-wait"],
        ["stop", "--all"],
        ["logs", "demo-chat", "-n", "5"],
        ["models", "list"],
        ["models", "show", "demo-coder", "--json"],
        ["keys", "list"],
        ["keys", "add", "laptop"],
        ["doctor", "--json"],
    ],
)
def test_every_admin_command_reaches_the_running_demo(running: tuple[Demo, Reached], argv: list[str]) -> None:
    demo, reached = running
    result = CliRunner().invoke(cli, argv)
    assert reached.calls == [(demo, argv)], result.output
    assert result.exit_code == 3  # the status of the command run inside
    assert result.stderr.count("(the running demo at http://127.0.0.1:28999)") == 1
    assert result.stdout == ""  # the command inside writes the data, straight to the terminal


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "validate"],
        ["models", "schema"],
        ["render", "--help"],
        ["emulate", "--help"],
        ["ps", "--help"],
    ],
)
def test_other_commands_stay_on_this_host(running: tuple[Demo, Reached], argv: list[str]) -> None:
    _, reached = running
    CliRunner().invoke(cli, argv)
    assert reached.calls == []


def test_overrides_win_and_the_demos_own_configuration_reaches_it(
    running: tuple[Demo, Reached], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo, reached = running
    other = tmp_path / "other.toml"
    other.write_text(f'[gateway]\napi_keys_file = "{tmp_path / "keys"}"\n')
    assert CliRunner().invoke(cli, ["--config", str(other), "keys", "list"]).exit_code == 0
    monkeypatch.setenv("SPARKCTL_URL", "http://127.0.0.1:1")
    assert CliRunner().invoke(cli, ["ps"]).exit_code == 1  # refused: no daemon there, nothing reached
    monkeypatch.delenv("SPARKCTL_URL")
    assert reached.calls == []
    result = CliRunner().invoke(cli, ["--config", str(demo.config), "ps"])
    assert reached.calls == [(demo, ["--config", str(demo.config), "ps"])]
    assert "(the running demo at" in result.stderr


def test_an_installed_configuration_wins_with_a_note(
    running: tuple[Demo, Reached], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, reached = running
    installed = tmp_path / "etc" / "sparkctl.toml"
    installed.parent.mkdir()
    installed.write_text(f'[gateway]\napi_keys_file = "{tmp_path / "keys"}"\n')
    result = CliRunner().invoke(cli, ["keys", "list"])
    assert reached.calls == [] and result.exit_code == 0
    assert f"(this host's sparkctl, configured by {installed};" in result.stderr


def test_a_stale_record_is_removed_and_the_host_described(
    running: tuple[Demo, Reached], tmp_path: Path, locator: Path
) -> None:
    _, reached = running
    write(demo_record(tmp_path, pid=gone_pid()), locator)
    result = CliRunner().invoke(cli, ["models", "list", "--json"])
    assert reached.calls == [] and result.exit_code == 0, result.output
    assert "demo" not in result.stderr
    assert not locator.exists()


def test_a_demo_whose_sandbox_is_down_is_an_error_not_a_hang(
    running: tuple[Demo, Reached], monkeypatch: pytest.MonkeyPatch
) -> None:
    demo, _ = running
    monkeypatch.setattr(demo_locator, "run_inside", RUN_INSIDE)  # the record names no running box
    result = CliRunner().invoke(cli, ["ps"])
    assert result.exit_code == 1
    assert f"error: the demo's sandbox at {demo.box} is not running" in result.stderr


def test_doctor_inside_the_demo_checks_what_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "sparkctl.toml"
    config.write_text(f'[gateway]\napi_keys_file = "{tmp_path / "none"}"\n')
    monkeypatch.setenv(INSIDE_ENV, "http://127.0.0.1:28999")

    checks = json.loads(CliRunner().invoke(cli, ["--config", str(config), "doctor", "--json"]).stdout)
    names = [c["check"] for c in checks]
    assert names[0] == "demo" and checks[0]["status"] == "pass"
    assert "the running sparkctl demo at http://127.0.0.1:28999" in checks[0]["detail"]
    assert not {"NVIDIA driver", "unified memory", "swap", "HF cache disk"} & set(names)
    assert {"systemd", "Podman", "Quadlet", "gateway port", "API key", "models"} <= set(names)
