"""Where a running `sparkctl demo` is, and which daemon an admin command describes.

The demo writes a record of itself to LOCATOR (JSON, root's alone: mode 0600) once its stack is
up, and removes it when it stops serving: at Ctrl-C, SIGTERM, or an error. A record whose
`sparkctl demo` process is gone (killed outright, a crash, a reboot) is stale: whoever reads it
next removes it. A record that is not root's (or this user's) is ignored: it names a program that
root would run.

The demo's stack lives in a sandbox with its own systemd, /run, /etc and journal, so an admin
command reaches it by running itself in there (`run_inside`: nsenter, the demo's sparkctl and its
configuration). `ps`, `logs`, `keys`, `doctor` then see what they see on a host where sparkctl is
installed, and `models list|show` describe the demo's catalog.

Which daemon an admin command describes (`choose`), first rule that applies:
1. inside the demo (INSIDE_ENV, set by `run_inside`): the demo's own;
2. `$SPARKCTL_URL`: the daemon at that URL;
3. `--config PATH` or `$SPARKCTL_CONFIG`: the daemon PATH configures on this host, unless PATH is
   the running demo's configuration (then the demo);
4. an installed configuration (/etc/sparkctl/sparkctl.toml; for a user other than root, the one
   `install --user` wrote): this host's daemon (a note names the demo too, when one runs);
5. a running demo (root only: the record is root's);
6. otherwise this host's daemon, with the default configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkctl.client import ENV_URL
from sparkctl.errors import DemoError
from sparkctl.paths import write_atomic
from sparkctl.sandbox.box import Box
from sparkctl.sandbox.procs import proc_start
from sparkctl.settings import ENV_CONFIG, config_path

LOCATOR = Path("/run/sparkctl-demo/demo.json")
# Set for the command run inside the demo: it describes the demo (doctor checks what applies to
# it) and never looks for a demo again. Its value is the demo's gateway URL.
INSIDE_ENV = "SPARKCTL_IN_DEMO"
# The box's namespaces, as Box.run enters them: mount, uts, ipc, net, pid, cgroup.
_NAMESPACES = ("-m", "-u", "-i", "-n", "-p", "-C")


@dataclass(frozen=True, slots=True)
class Demo:
    pid: int  # the `sparkctl demo` process
    started: int | None  # its start time (clock ticks since boot): tells it from a reused pid
    listen: str  # the gateway's HOST:PORT
    config: Path  # the demo's configuration (the same path inside the box and outside)
    box: Path  # the sandbox
    sparkctl: Path  # the sparkctl the box runs (it sees this interpreter and this source tree)

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def to_json(self) -> str:
        return json.dumps(
            {
                "pid": self.pid,
                "started": self.started,
                "listen": self.listen,
                "url": self.url,
                "config": str(self.config),
                "box": str(self.box),
                "sparkctl": str(self.sparkctl),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Demo:
        """Raises ValueError on anything but a record `to_json` wrote."""
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            pid, started, listen = data["pid"], data["started"], data["listen"]
            paths = [Path(data[k]) for k in ("config", "box", "sparkctl")]
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a demo record: {e}") from None
        if not isinstance(pid, int) or not (started is None or isinstance(started, int)):
            raise ValueError("pid and started must be integers")
        if not isinstance(listen, str) or not listen.rpartition(":")[2].isdigit():
            raise ValueError(f"listen must be HOST:PORT, got {listen!r}")
        if not all(p.is_absolute() for p in paths):
            raise ValueError("config, box and sparkctl must be absolute paths")
        return cls(pid, started, listen, *paths)


def this_demo(listen: str, config: Path, box: Path, sparkctl: Path) -> Demo:
    """The record of the demo this process runs."""
    return Demo(os.getpid(), proc_start(os.getpid()), listen, config, box, sparkctl)


def write(demo: Demo, path: Path | None = None) -> None:
    path = path or LOCATOR
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)  # whatever the umask: `read` trusts no directory others may write
    write_atomic(path, demo.to_json() + "\n", 0o600)


def remove(demo: Demo, path: Path | None = None) -> None:
    """Remove the record if it is this demo's (a later demo's stays); idempotent."""
    path = path or LOCATOR
    try:
        current = Demo.from_json(path.read_text())
    except OSError:
        return
    except ValueError:
        current = None
    if current is None or (current.pid, current.started) == (demo.pid, demo.started):
        path.unlink(missing_ok=True)


def read(path: Path | None = None) -> Demo | None:
    """The running demo, or None: no record, one this user may not read (root's), one that is not
    root's or this user's, or a stale one (removed)."""
    path = path or LOCATOR
    try:
        trusted = all(_trusted(p.stat()) for p in (path.parent, path))
        text = path.read_text() if trusted else ""
    except OSError:
        return None
    if not trusted:
        return None
    try:
        demo = Demo.from_json(text)
    except ValueError:
        _discard(path)  # half a record describes nothing
        return None
    if demo.started is None or proc_start(demo.pid) != demo.started:
        _discard(path)
        return None
    return demo


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & 0o022


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


@dataclass(frozen=True, slots=True)
class Choice:
    demo: Demo | None  # run the command inside this demo; None: describe this host's daemon
    note: str | None  # what to say on stderr first: which daemon this is


def choose(
    explicit: Path | None, env: Mapping[str, str], installed: Path | None, demo: Demo | None
) -> Choice:
    """The daemon an admin command describes, by the rules in this module's docstring.
    `explicit`: --config; `installed`: the configuration this host would use without one."""
    if demo is None or env.get(INSIDE_ENV) or env.get(ENV_URL):
        return Choice(None, None)
    given = explicit or (Path(env[ENV_CONFIG]) if env.get(ENV_CONFIG) else None)
    if given is not None:
        return Choice(demo, _reached(demo)) if _same_file(given, demo.config) else Choice(None, None)
    if installed is not None:
        return Choice(
            None,
            f"(this host's sparkctl, configured by {installed}; the demo running at {demo.url} "
            f"is reached with --config {demo.config})",
        )
    return Choice(demo, _reached(demo))


def find(explicit: Path | None, locator: Path | None = None) -> Choice:
    """`choose` on this machine: its environment, its installed configuration, the record."""
    env = os.environ
    if env.get(INSIDE_ENV) or env.get(ENV_URL):
        return Choice(None, None)  # no record to read
    demo = read(locator)
    installed = None if explicit or env.get(ENV_CONFIG) or demo is None else config_path(None)
    return choose(explicit, env, installed, demo)


def _reached(demo: Demo) -> str:
    return f"(the running demo at {demo.url})"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a.absolute() == b.absolute()


def command_inside(demo: Demo, args: Sequence[str], init: int) -> list[str]:
    """`sparkctl --config DEMO_CONFIG ARGS` in the namespaces of the box whose PID 1 is `init`."""
    return [
        "nsenter",
        "-t",
        str(init),
        *_NAMESPACES,
        "--",
        str(demo.sparkctl),
        "--config",
        str(demo.config),
        *args,
    ]


def run_inside(demo: Demo, args: Sequence[str]) -> int:
    """Run `sparkctl ARGS` inside the demo's sandbox, on this terminal; its exit status."""
    init = Box(path=demo.box).init_pid
    if init is None:
        raise DemoError(
            f"the demo's sandbox at {demo.box} is not running (is the demo ending?)",
            hint=f"start it again with `sparkctl demo`, or remove {LOCATOR} if no demo runs",
        )
    try:
        child = subprocess.Popen(command_inside(demo, args, init), env={**os.environ, INSIDE_ENV: demo.url})
    except FileNotFoundError:
        raise DemoError("nsenter is not installed (util-linux)") from None
    while True:
        try:
            code = child.wait()
            break
        except KeyboardInterrupt:
            # Ctrl-C reached the command inside as well (`logs -f`): it decides when it ends.
            continue
    return code if code >= 0 else 128 - code
