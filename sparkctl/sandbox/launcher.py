"""Starts a sandbox: `unshare … stage2.sh` becomes PID 1 (then systemd) of new namespaces, with a
fresh pty as its /dev/console; this process copies that console to DIR/console.log until the box
is gone. It runs detached (its own session) so the box outlives a crashed test run, which the next
run then cleans up.

Usage: python3 launcher.py DIR STAGE2 PREFIX CGROUP_DIR
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tty

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    box_dir, stage2, prefix, cgroup = sys.argv[1:5]
    # Orphans of the box (its PID 1 when `unshare` is killed first) come to us, not to the host's
    # init, and are reaped below: a killed box leaves no zombie behind.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    master, slave = os.openpty()
    tty.setraw(slave)  # no \n → \r\n mangling in the log
    proc = _start_box(box_dir, stage2, prefix, cgroup, slave)
    os.close(slave)
    with open(os.path.join(box_dir, "unshare.pid"), "w") as f:
        f.write(f"{proc.pid}\n")
    _copy_console(master, proc, os.path.join(box_dir, "console.log"))
    _reap_orphans()
    return 0


def _start_box(box_dir: str, stage2: str, prefix: str, cgroup: str, console: int) -> subprocess.Popen[bytes]:
    """`unshare … stage2.sh` in its own session and cgroup, with the pty `console` as its stdio."""
    console_path = os.ttyname(console)
    return subprocess.Popen(
        [
            "unshare",
            *_namespaces(),
            "--propagation",
            "private",
            "--kill-child",
            "/bin/bash",
            stage2,
            box_dir,
            console_path,
            prefix,
        ],
        stdin=console,
        stdout=console,
        stderr=console,
        preexec_fn=lambda: _enter_cgroup(cgroup),
        env=_box_env(),
        close_fds=True,
    )


def _enter_cgroup(cgroup: str) -> None:
    os.setsid()
    # The box's own cgroup2 subtree: `cgroup.kill` there reaches the box's processes only.
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write("0")


def _box_env() -> dict[str, str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for key in ("SPARKCTL_BOX_NET", "SPARKCTL_BOX_SHARES"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def _namespaces() -> list[str]:
    namespaces = ["--pid", "--fork", "--mount", "--uts", "--ipc", "--cgroup"]
    if os.environ.get("SPARKCTL_BOX_NET") == "private":
        namespaces.append("--net")
    return namespaces


def _copy_console(master: int, proc: subprocess.Popen[bytes], log_path: str) -> None:
    """The box's console into `log_path` until the box is gone, then how `unshare` ended."""
    with open(log_path, "ab", buffering=0) as log:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every slave fd is closed, the namespace is gone
                break
            if not data:
                break
            log.write(data)
        rc = proc.wait()
        log.write(b"\n[sparkctl-box launcher] unshare exited with %d\n" % rc)


def _reap_orphans() -> None:
    """Wait for every child left (the box's orphans come to us, see main) until none is."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


if __name__ == "__main__":
    raise SystemExit(main())
