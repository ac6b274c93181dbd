"""Rendered units on the real sandboxed systemd 252, Quadlet and Podman 5.4."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sparkctl.catalog import load_catalog
from sparkctl.paths import SHIPPED_CATALOG, SHIPPED_UNITS
from sparkctl.sandbox.box import Box
from tests.conftest import box_settings
from tests.helpers import write_model
from tests.integration.conftest import SPARKCTL, emulated, engine_headers, get, refused


def test_every_shipped_model_passes_quadlet_and_systemd_analyze(box: Box, deploy: Any) -> None:
    settings = box_settings(box)
    names = deploy(SHIPPED_CATALOG, settings)
    enabled = [m.id for m in load_catalog(settings, [SHIPPED_CATALOG]).enabled]
    assert len(enabled) >= 30
    generated = []
    for model_id in enabled:
        props = box.systemctl(
            "show", "-p", "LoadState,FragmentPath,SourcePath", f"sparkctl-{model_id}.service"
        ).stdout
        assert "LoadState=loaded" in props, props
        assert f"FragmentPath=/run/systemd/generator/sparkctl-{model_id}.service" in props, props
        generated.append(f"/run/systemd/generator/sparkctl-{model_id}.service")
    # verify reads units from the directories of the files it checks: stage the generated
    # services and the model sockets beside sparkctl's own service, which the sockets hand off to.
    staged = box.path / "verify"
    staged.mkdir(exist_ok=True)
    sockets = [n for n in names if n.endswith(".socket")]
    script = " && ".join(
        [
            f"cp {' '.join(generated)} {staged}",
            f"cp {' '.join(str(box.unit_dir / n) for n in sockets)} {staged}",
            f"cp {SHIPPED_UNITS}/sparkctl.service {SHIPPED_UNITS}/sparkctl.socket {staged}",
        ]
    )
    box.run("sh", "-c", script)
    targets = [str(staged / Path(g).name) for g in generated] + [str(staged / n) for n in sockets]
    proc = box.run("systemd-analyze", "verify", "--man=no", "--recursive-errors=no", *targets, check=False)
    subprocess.run(["rm", "-rf", str(staged)], check=False)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def test_render_check_runs_the_real_generator_and_verify(box: Box, tmp_path: Path) -> None:
    out = box.path / "render-check"
    config = box.path / "render-check.toml"
    config.write_text(f'[catalog]\ndirs = ["{SHIPPED_CATALOG}"]\n[runtime]\nsparkctl = "{SPARKCTL}"\n')
    proc = box.run(SPARKCTL, "--config", str(config), "render", "--out", str(out), "--check", check=False)
    try:
        assert proc.returncode == 0, proc.stderr
        assert "quadlet 5.4.2: 33 container units generated" in proc.stderr
        assert "quadlet 5.4.2: 33 container units generated, and sparkctl.network" in proc.stderr
        assert "systemd-analyze verify: 67 units OK" in proc.stderr  # 33 + their 33 sockets + the network
        # A unit Quadlet refuses, or that systemd-analyze finds wrong, fails the check.
        bad = (
            "from pathlib import Path; from sparkctl.units import verify; from sparkctl.units.render import UnitFile; "
            "from sparkctl.settings import Settings; "
            f"d = Path({str(out)!r}); "
            "(d / 'sparkctl-x.container').write_text('[Container]\\nImage=i\\nNoSuchKey=1\\n'); "
            "(d / 'sparkctl-y.service').write_text('[Service]\\nExecStart=/nonexistent\\nBogus=1\\n'); "
            "r = verify.check([UnitFile('quadlet', 'sparkctl-x.container', ''), UnitFile('unit', 'sparkctl-y.service', '')], "
            "{'quadlet': d, 'unit': d}, Settings()); print(r.ok); print(*r.lines, sep='\\n')"
        )
        proc = box.run(sys.executable, "-c", bad, check=False)
        lines = proc.stdout.splitlines()
        assert lines[0] == "False", proc.stdout + proc.stderr
        assert any("unsupported key 'NoSuchKey'" in ln for ln in lines), lines
        assert any("generated no service for: sparkctl-x.container" in ln for ln in lines), lines
        assert any("Bogus" in ln for ln in lines) and any("/nonexistent" in ln for ln in lines), lines
    finally:
        subprocess.run(["rm", "-rf", str(out), str(config)], check=False)


HOSTILE = [
    "a b",
    'it\'s "q"',
    "100%",
    "%n",
    "$HOME",
    "${HOME}",
    "back\\slash",
    "tab\\t",
    "x=y z",
    "'",
    '"',
    "--flag=$X %i",
    "ünï©ødé",
    "\\n",
    "a;b",
    "$$",
    '{"json": [1, "x"]}',
]
HOSTILE_ENV = {"H1": "a b $X %n \"q\" 'x' back\\slash ; $$ %%", "H2": "", "H3": "ünï"}
DUMP = "import json,os,sys; json.dump({'argv':sys.argv[1:],'env':dict(os.environ)}, open(%r,'w'))"


def test_hostile_values_reach_the_engine_intact(
    box: Box, emulator_image: str, deploy: Any, tmp_path: Path
) -> None:
    """Spaces, quotes, %, $, backslashes and non-ASCII survive Quadlet, systemd and Podman unchanged."""
    out = box.path / "hostile"
    out.mkdir(exist_ok=True)
    common: dict[str, Any] = {"kind": "openai", "args": HOSTILE, "env": HOSTILE_ENV, "ulimits": {}}
    write_model(
        tmp_path,
        "hostile-c",
        description='hostile 100% $HOME \\ " ;',
        engine={
            **common,
            "image": emulator_image,
            "entrypoint": ["/usr/bin/python3", "-c", DUMP % "/out/c.json"],
            "volumes": [{"source": str(out), "target": "/out", "read_only": False}],
        },
    )
    write_model(
        tmp_path,
        "hostile-p",
        engine={
            **common,
            "runtime": "process",
            "image": None,
            "port": 28190,
            "command": [sys.executable, "-c", DUMP % str(out / "p.json")],
        },
    )
    deploy(tmp_path, box_settings(box))
    box.systemctl("start", "--no-block", "sparkctl-hostile-c.service", "sparkctl-hostile-p.service")
    for name in ("c.json", "p.json"):
        path = out / name
        deadline = time.monotonic() + 20
        while not (path.exists() and path.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        dump = json.loads(path.read_text())
        assert dump["argv"] == HOSTILE, name
        assert {k: dump["env"].get(k) for k in HOSTILE_ENV} == HOSTILE_ENV, name
    desc = box.systemctl("show", "-p", "Description", "sparkctl-hostile-c.service").stdout.strip()
    assert desc == 'Description=sparkctl model hostile-c: hostile 100% $HOME \\ " ;'


INTROSPECT = """
import json, os, sys
def writable(d):
    try:
        with open(os.path.join(d, ".probe"), "w"):
            pass
        return True
    except OSError:
        return False
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
print("INTROSPECT " + json.dumps({
    "uid": os.getuid(),
    "cap_eff": int(status["CapEff"], 16),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "hf_writable": writable(os.environ["HF_HOME"]),
    "cache_writable": writable(os.environ["VLLM_CACHE_ROOT"].rsplit("/", 1)[0]),
    "cache": os.environ["VLLM_CACHE_ROOT"],
    "offline": os.environ.get("HF_HUB_OFFLINE"),
}), flush=True)
"""
# one line (catalog words take no control characters): the script, hex-encoded
INTROSPECT_LINE = f"exec(bytes.fromhex('{INTROSPECT.encode().hex()}').decode())"


def _introspection(box: Box, unit: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in box.journal(unit=unit, lines=100).splitlines():
            if "INTROSPECT " in line:
                return dict(json.loads(line.split("INTROSPECT ", 1)[1]))
        time.sleep(0.2)
    raise AssertionError(box.journal(unit=unit, lines=40))


def test_engines_are_confined_by_default(box: Box, emulator_image: str, deploy: Any, tmp_path: Path) -> None:
    """A container engine: no capability, no new privileges, the HF cache read-only and offline,
    a compile cache of its own. A process engine: the same, as a dynamic unprivileged user."""
    common: dict[str, Any] = {"kind": "openai", "ulimits": {}}
    write_model(
        tmp_path,
        "conf-c",
        engine={**common, "image": emulator_image, "entrypoint": ["/usr/bin/python3", "-c", INTROSPECT_LINE]},
    )
    write_model(
        tmp_path,
        "conf-p",
        engine={
            **common,
            "runtime": "process",
            "image": None,
            "port": 28194,
            "command": ["/usr/bin/python3", "-c", INTROSPECT_LINE],
        },
    )
    settings = box_settings(box, runtime={"process_user": "dynamic"})
    deploy(tmp_path, settings)
    box.systemctl("start", "--no-block", "sparkctl-conf-c.service", "sparkctl-conf-p.service")
    container = _introspection(box, "sparkctl-conf-c.service")
    process = _introspection(box, "sparkctl-conf-p.service")
    for seen in (container, process):
        assert seen["cap_eff"] == 0 and seen["no_new_privs"] == "1", seen
        assert not seen["hf_writable"] and seen["cache_writable"] and seen["offline"] == "1", seen
    assert process["uid"] != 0 and process["cache"].endswith("/conf-p/vllm")
    assert (settings.runtime.compile_cache / "conf-c" / ".probe").exists()  # its own, on the host
    # systemd's own rating of the process unit (docs/systemd-security.md reports it): "OK"
    rating = box.run(
        "systemd-analyze", "security", "--no-pager", "sparkctl-conf-p.service", check=False
    ).stdout
    exposure = float(rating.rsplit("Overall exposure level for sparkctl-conf-p.service: ", 1)[1].split()[0])
    assert exposure <= 3.5, rating


@pytest.mark.parametrize("container", [False, True], ids=["process", "container"])
def test_start_job_ends_when_the_engine_is_ready_and_stop_cleans_up(
    box: Box, emulator_image: str, deploy: Any, tmp_path: Path, container: bool
) -> None:
    port = 28191 if container else 28192
    emulated(tmp_path, "emu", port, container=container, load_time=0.5)
    settings = box_settings(box)
    deploy(tmp_path, settings)
    assert refused(port)
    t0 = time.monotonic()
    box.systemctl("start", "sparkctl-emu.service")  # blocks until the job is done
    elapsed = time.monotonic() - t0
    # The job ended only once the engine answered: it is serving right now, no retry needed.
    status, body = get(f"http://127.0.0.1:{port}/v1/models", headers=engine_headers(settings))
    assert status == 200 and json.loads(body)["data"][0]["id"] == "emu"
    # the engine answers the daemon's key only: a local user going around the gateway gets 401
    assert get(f"http://127.0.0.1:{port}/v1/models")[0] == 401
    assert get(f"http://127.0.0.1:{port}/health")[0] == 200  # (health stays open, as vLLM's)
    assert elapsed >= 0.5
    state = box.systemctl("show", "-p", "ActiveState,SubState", "sparkctl-emu.service").stdout
    assert "ActiveState=active" in state and "SubState=running" in state
    log = box.journal(unit="sparkctl-emu.service")
    assert "sparkctl-emulate: ready exec_to_ready_ms=" in log and "sparkctl-probe:" in log
    box.systemctl("stop", "sparkctl-emu.service")
    assert refused(port)
    assert "ActiveState=inactive" in box.systemctl("show", "-p", "ActiveState", "sparkctl-emu.service").stdout
    if container:
        assert box.run("podman", "ps", "-a", "--format", "{{.Names}}").stdout.strip() == ""


@pytest.mark.parametrize("container", [False, True], ids=["process", "container"])
def test_an_engine_hung_in_its_teardown_is_killed_after_its_stop_timeout(
    box: Box, emulator_image: str, deploy: Any, tmp_path: Path, container: bool
) -> None:
    """serve.stop_timeout bounds a stop: an engine that does not exit after SIGTERM (here it
    would take ten minutes) is killed, instead of holding the GPU for systemd's default 90 s."""
    port = 28196 if container else 28197
    emulated(
        tmp_path,
        "hang",
        port,
        container=container,
        engine={"args": ["--load-time", "0.2", "--stop-time", "600"]},
        serve={"stop_timeout": "1s"},
    )
    deploy(tmp_path, box_settings(box))
    box.systemctl("start", "sparkctl-hang.service")
    assert not refused(port)
    t0 = time.monotonic()
    box.systemctl("stop", "sparkctl-hang.service", check=False)  # blocks until the job is done
    elapsed = time.monotonic() - t0
    state = box.systemctl("show", "-p", "ActiveState", "sparkctl-hang.service").stdout
    assert "ActiveState=inactive" in state or "ActiveState=failed" in state, state
    assert elapsed < 30, elapsed  # 1 s and the kill, far from the 90 s it would otherwise hold
    log = box.journal(unit="sparkctl-hang.service")
    assert "tearing down for 600s" in log
    if container:
        assert "failed to stop container sparkctl-hang in 1 seconds, resorting to SIGKILL" in log, log[-2000:]
        assert box.run("podman", "ps", "-a", "--format", "{{.Names}}").stdout.strip() == ""
    else:
        assert "State 'stop-sigterm' timed out. Killing." in log, log[-2000:]
    box.systemctl("reset-failed", "sparkctl-hang.service", check=False)


def test_an_engine_that_dies_while_loading_fails_the_start(box: Box, deploy: Any, tmp_path: Path) -> None:
    write_model(
        tmp_path,
        "dies",
        engine={
            "runtime": "process",
            "image": None,
            "port": 28193,
            "ulimits": {},
            "kind": "openai",
            "command": [sys.executable, "-c", "import sys; sys.exit(3)"],
        },
    )
    deploy(tmp_path, box_settings(box))
    proc = box.systemctl("start", "sparkctl-dies.service", check=False)
    assert proc.returncode != 0
    props = box.systemctl("show", "-p", "ActiveState,Result,ExecMainStatus", "sparkctl-dies.service").stdout
    assert "ActiveState=failed" in props and "Result=exit-code" in props and "ExecMainStatus=3" in props


def test_conflicting_models_never_run_together(box: Box, deploy: Any, tmp_path: Path) -> None:
    """Even a manual `systemctl start` stops the other exclusive model first (Conflicts= + ordering)."""
    emulated(tmp_path, "ex-a", 28194, serve={"gpu": "exclusive"})
    emulated(tmp_path, "ex-b", 28195, serve={"gpu": "exclusive"})
    deploy(tmp_path, box_settings(box))
    box.systemctl("start", "sparkctl-ex-b.service")
    box.systemctl("start", "sparkctl-ex-a.service")
    a = _props(box, "sparkctl-ex-a.service")
    b = _props(box, "sparkctl-ex-b.service")
    assert a["ActiveState"] == "active" and b["ActiveState"] == "inactive"
    # b was fully stopped before a's engine was even executed
    assert int(b["InactiveEnterTimestampMonotonic"]) <= int(a["ExecMainStartTimestampMonotonic"])
    box.systemctl("start", "sparkctl-ex-b.service")
    a, b = _props(box, "sparkctl-ex-a.service"), _props(box, "sparkctl-ex-b.service")
    assert a["ActiveState"] == "inactive" and b["ActiveState"] == "active"
    assert int(a["InactiveEnterTimestampMonotonic"]) <= int(b["ExecMainStartTimestampMonotonic"])


def _props(box: Box, unit: str) -> dict[str, str]:
    out = box.systemctl(
        "show", "-p", "ActiveState,InactiveEnterTimestampMonotonic,ExecMainStartTimestampMonotonic", unit
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


STUB_DAEMON = r"""
import os, socket, sys
names = os.environ["LISTEN_FDNAMES"].split(":")
socks = [socket.socket(fileno=3 + i) for i in range(int(os.environ["LISTEN_FDS"]))]
import selectors
sel = selectors.DefaultSelector()
for name, s in zip(names, socks):
    sel.register(s, selectors.EVENT_READ, name)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.sendall(f"{key.data} {os.environ['LISTEN_FDNAMES']}\n".encode())
        conn.close()
"""


def test_a_model_socket_hands_its_connections_to_the_daemon_by_name(
    box: Box, deploy: Any, tmp_path: Path
) -> None:
    """BRIEF §4.3: a connection to any model's own port starts sparkctl.service, which receives every
    model socket, each named after its model."""
    emulated(tmp_path, "sock-a", 28196, serve={"direct_port": 28296})
    emulated(tmp_path, "sock-b", 28197, serve={"direct_port": 28297})
    stub = box.unit_dir / "sparkctl.service"
    script = box.path / "stub-daemon.py"
    script.write_text(STUB_DAEMON)
    stub.write_text(f"[Service]\nExecStart={sys.executable} {script}\n")
    try:
        deploy(tmp_path, box_settings(box))
        box.systemctl("start", "sparkctl-sock-a.socket", "sparkctl-sock-b.socket")
        assert "ActiveState=inactive" in box.systemctl("show", "-p", "ActiveState", "sparkctl.service").stdout
        replies = {}
        for name, port in (("sock-b", 28297), ("sock-a", 28296)):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                replies[name] = s.makefile().readline().split()
        assert replies["sock-a"][0] == "sock-a" and replies["sock-b"][0] == "sock-b"
        assert sorted(replies["sock-a"][1].split(":")) == ["sock-a", "sock-b"]
    finally:
        box.systemctl(
            "stop", "sparkctl.service", "sparkctl-sock-a.socket", "sparkctl-sock-b.socket", check=False
        )
        stub.unlink(missing_ok=True)
