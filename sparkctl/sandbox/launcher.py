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
    slave_path = os.ttyname(slave)

    def enter_cgroup() -> None:
        os.setsid()
        # The box's own cgroup2 subtree: `cgroup.kill` there reaches the box's processes only.
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write("0")

    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for key in ("SPARKCTL_BOX_NET", "SPARKCTL_BOX_SHARES"):
        if key in os.environ:
            env[key] = os.environ[key]
    namespaces = ["--pid", "--fork", "--mount", "--uts", "--ipc", "--cgroup"]
    if os.environ.get("SPARKCTL_BOX_NET") == "private":
        namespaces.append("--net")
    proc = subprocess.Popen(
        [
            "unshare",
            *namespaces,
            "--propagation",
            "private",
            "--kill-child",
            "/bin/bash",
            stage2,
            box_dir,
            slave_path,
            prefix,
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=enter_cgroup,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    with open(os.path.join(box_dir, "unshare.pid"), "w") as f:
        f.write(f"{proc.pid}\n")
    with open(os.path.join(box_dir, "console.log"), "ab", buffering=0) as log:
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
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
