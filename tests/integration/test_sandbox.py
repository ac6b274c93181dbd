"""The sandbox itself: boxes come and go leaving the host exactly as it was, even after a crash."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from sparkctl.sandbox import box as sandbox
from sparkctl.sandbox import image
from sparkctl.sandbox.box import Box, reap_stale

WATCHED = {
    "systemd",
    "systemd-journal",
    "dbus-daemon",
    "podman",
    "conmon",
    "crun",
    "unshare",
    "catatonit",
    "sparkctl",
    "sd-pam",
    "(sd-pam)",
}


BOX_PORTS = range(28180, 28182)  # what the containers of the runs below listen on


def host_state(ignore_cgroup: str | None) -> dict[str, object]:
    """What a box could leave behind: mounts, cgroups, processes, links, listeners, files."""
    mounts = subprocess.run(
        ["findmnt", "-rn", "-o", "TARGET,FSTYPE"], capture_output=True, text=True, check=True
    ).stdout
    cg_root = sandbox._cgroup2_root()
    procs = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
            cgroup = (d / "cgroup").read_text()
            cmdline = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if ignore_cgroup and ignore_cgroup in cgroup:
            continue
        if comm in WATCHED or b"launcher.py" in cmdline:
            procs.add((int(d.name), comm))
    return {
        "mounts": sorted(
            line
            for line in mounts.splitlines()
            if "sparkctl" in line or "overlay" in line or "containers" in line or "netns" in line
        ),
        "cgroups": sorted(p.name for p in cg_root.iterdir() if p.name.startswith("sparkctl-box")),
        "processes": sorted(procs),
        "links": sorted(p.name for p in Path("/sys/class/net").iterdir()),
        # listeners on the ports these tests give their containers: other programs on the host
        # (another test run, a build) open and close listeners of their own meanwhile
        "tcp": sorted(
            ln.split()[1]
            for ln in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if ln.split()[3] == "0A" and int(ln.split()[1].rsplit(":", 1)[1], 16) in BOX_PORTS
        ),
        "boxes": sorted(p.name for p in sandbox.ROOT.iterdir()) if sandbox.ROOT.exists() else [],
        "run": sorted(p.name for p in Path("/run").iterdir()),
        "etc-containers": Path("/etc/containers").exists()
        and sorted(p.name for p in Path("/etc/containers").iterdir()),
        "var-lib-containers": Path("/var/lib/containers").exists(),
        "etc": sorted(p.name for p in Path("/etc").iterdir()),
    }


def session_cgroup(box: Box) -> str:
    return box.cgroup.name


def test_two_runs_back_to_back_leave_nothing_behind(box: Box) -> None:
    before = host_state(session_cgroup(box))
    tar = image.build()
    for run in range(2):
        b = Box.up(name=f"hyg{run}")
        try:
            image.import_into(b, tar)
            # leave a container running at teardown: down() must still clean everything
            b.run(
                "podman",
                "run",
                "-d",
                "--name",
                "left-running",
                image.IMAGE,
                "m",
                "--port",
                str(BOX_PORTS[run]),
            )
            b.run("systemd-run", "--unit=left-running-too", "sleep", "600")
        finally:
            b.down()
        assert not b.path.exists()
    assert host_state(session_cgroup(box)) == before


CRASHING_OWNER = textwrap.dedent("""
    import sys, time
    from sparkctl.sandbox.box import Box
    b = Box.up(name="crashed")
    print(b.path, flush=True)
    time.sleep(600)
""")


def test_a_box_left_by_a_crashed_run_is_reaped_by_the_next(box: Box) -> None:
    before = host_state(session_cgroup(box))
    owner = subprocess.Popen([sys.executable, "-c", CRASHING_OWNER], stdout=subprocess.PIPE, text=True)
    try:
        path = Path(owner.stdout.readline().strip())  # type: ignore[union-attr]
        assert (path / ".sparkctl-box").exists() and Box(path=path).init_pid is not None
    finally:
        owner.send_signal(signal.SIGKILL)  # the test run dies without tearing its box down
        owner.wait()
        owner.stdout.close()  # type: ignore[union-attr]
    assert Box(path=path).init_pid is not None  # the box outlived its owner
    assert reap_stale() == [path]
    assert not path.exists()
    assert host_state(session_cgroup(box)) == before


def test_commands_run_inside_the_box(box: Box) -> None:
    assert box.run("hostname").stdout.strip() == "sparkctl-box"
    assert box.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    assert box.run("podman", "--version").stdout.strip() == "podman version 5.4.2"
    assert "running" in box.systemctl("is-system-running", check=False).stdout
    # the host's files are visible read-only through the overlay; writes stay in the box
    box.run("sh", "-c", "echo x > /etc/sparkctl-box-probe")
    assert not Path("/etc/sparkctl-box-probe").exists()


def test_wrappers_let_a_person_debug_the_box(box: Box) -> None:
    out = subprocess.run(
        [str(box.path / "bin" / "systemctl"), "is-system-running"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.stdout.strip() == "running"
