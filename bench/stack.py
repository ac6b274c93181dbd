"""The system under test: a sandboxed systemd (its own box, named for the benchmark), emulated
models rendered into it as real units, and `sparkctl serve` as a subprocess driving them over
the box's bus, with auth on and a key made by `sparkctl.apikeys.KeyStore`.

Everything it creates lives in the box's directory and goes away with `close()`, which runs
whatever happened before it.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkctl.apikeys import KeyStore
from sparkctl.catalog import load_catalog
from sparkctl.sandbox import image
from sparkctl.sandbox.box import Box
from sparkctl.sandbox.host import spare_port
from sparkctl.sandbox.weights import write_placeholder
from sparkctl.settings import Settings, load_settings
from sparkctl.units.names import service_name
from sparkctl.units.render import render
from sparkctl.units.sync import sync

from .machine import CpuPlan
from .procs import Child, pin, wait_for

SPARKCTL = str(Path(sys.prefix) / "bin" / "sparkctl")
READY = re.compile(r"ready exec_to_ready_ms=([\d.]+) ready_unix=([\d.]+)")
TIMESTAMPS = (
    "InactiveExitTimestampMonotonic",  # the start job began (the unit left "inactive")
    "ExecMainStartTimestampMonotonic",  # the engine's process was forked (stamped once fork returns)
    "ActiveEnterTimestampMonotonic",  # the readiness probe succeeded: the start job is done
    "ActiveExitTimestampMonotonic",  # a stop began
    "InactiveEnterTimestampMonotonic",  # the stop ended
)


@dataclass
class ModelDef:
    id: str
    load_time: float
    runtime: str = "process"  # "process" | "container"
    tokens_per_second: float = 0.0
    exclusive: bool = False
    # Tiny shares: every shared model fits beside the others, and the memory gate of a swap
    # (MemAvailable ≥ share × MemTotal) is satisfied by its first reading, so it adds no wait.
    fraction: float = 0.01
    max_model_len: int = 4096
    nofile: int | None = None
    port: int = 0

    def entry(self) -> dict[str, Any]:
        engine: dict[str, Any] = {
            "runtime": self.runtime,
            "port": self.port,
            "host_port": self.port,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.fraction,
            "args": [
                "--load-time",
                f"{self.load_time:.3f}",
                "--tokens-per-second",
                f"{self.tokens_per_second:g}",
            ],
            # No memlock/stack limits: the box's systemd may not raise them (no CAP_SYS_RESOURCE).
            "ulimits": {"nofile": self.nofile} if self.nofile else {},
        }
        if self.runtime == "container":
            engine["image"] = image.IMAGE
        else:
            engine["command"] = [SPARKCTL, "emulate"]
        serve: dict[str, Any] = {"direct_port": 0, "idle_timeout": "never"}
        if self.exclusive:
            serve["gpu"] = "exclusive"
        return {
            "id": self.id,
            "description": f"benchmark model ({self.runtime}, emulated)",
            "status": "experimental",
            "source": {"hf_repo": f"bench/{self.id}"},
            "engine": engine,
            "serve": serve,
        }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string for these values
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def to_toml(data: dict[str, Any]) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]", *(f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items())]
    return "\n".join(lines) + "\n"


class Stack:
    def __init__(self, name: str, plan: CpuPlan, models: list[ModelDef]) -> None:
        self.name = name
        self.plan = plan
        self.models = {m.id: m for m in models}
        self.box: Box | None = None
        self.daemon: Child | None = None
        self.port = 0
        self.key = ""
        self.work = Path()  # DIR/bench inside the box's directory, once it is up
        self.config = Path()
        self.settings: Settings | None = None

    # ------------------------------------------------------------------------------ lifecycle
    def up(self) -> None:
        self.box = Box.up(name=self.name)
        # Outside /tmp: the units run with PrivateTmp= and must see what they need.
        self.work = self.box.path / "bench"
        (self.work / "models").mkdir(parents=True)
        for sub in ("hf", "compile"):
            (self.work / sub).mkdir()
        if any(m.runtime == "container" for m in self.models.values()):
            image.import_into(self.box)
        for m in self.models.values():
            m.port = spare_port()
            # Emulated engines load no weights, but a start checks that they were pulled.
            write_placeholder(self.work / "hf", m.entry()["source"]["hf_repo"])
        store = KeyStore()
        self.key = store.add("bench", admin=True)
        store.save(self.work / "api-keys")
        self.port = spare_port()
        config = self.work / "sparkctl.toml"
        config.write_text(
            to_toml(
                {
                    "gateway": {
                        "listen": [f"127.0.0.1:{self.port}"],
                        "auth": "required",
                        "api_keys_file": str(self.work / "api-keys"),
                    },
                    "catalog": {"dirs": [str(self.work / "models")]},
                    "systemd": {
                        "bus": self.box.bus_address,
                        "quadlet_dir": str(self.box.quadlet_dir),
                        "unit_dir": str(self.box.unit_dir),
                    },
                    # drain_timeout bounds how long a swap waits for requests in flight (there are
                    # none when the benchmark swaps, unless a lease leaked: the report counts them).
                    "scheduler": {"idle_timeout": "never", "drain_timeout": "10s"},
                    "runtime": {
                        "container_network": "host",
                        "sparkctl": SPARKCTL,
                        "hf_cache": str(self.work / "hf"),
                        "compile_cache": str(self.work / "compile"),
                        "state_dir": str(self.work / "state"),  # what it learns: the box's, not the host's
                    },
                }
            )
        )
        self.config = config
        self.deploy()
        self.daemon = Child(
            "sparkctl",
            [SPARKCTL, "--config", str(config), "serve"],
            log=self.work / "daemon.log",
            cpus=self.plan.servers,
        )
        wait_for(self._healthy, 30, "sparkctl serve to answer /health")

    def _healthy(self) -> bool:
        assert self.daemon is not None
        if not self.daemon.alive():
            raise RuntimeError(f"sparkctl serve exited:\n{self.daemon.log_tail()}")
        try:
            return self.get("/health")[0] == 200
        except OSError:
            return False

    def deploy(self) -> None:
        """(Re)write the catalog and render it into the box, as `sparkctl install` would."""
        assert self.box is not None
        for m in self.models.values():
            (self.work / "models" / f"{m.id}.toml").write_text(to_toml(m.entry()))
        settings = load_settings(self.config)
        self.settings = settings
        files = render(load_catalog(settings, [self.work / "models"]), settings)
        if sync(files, {"quadlet": self.box.quadlet_dir, "unit": self.box.unit_dir}).any:
            self.box.daemon_reload()

    def set_load_time(self, model: str, seconds: float) -> None:
        self.models[model].load_time = seconds
        self.deploy()

    def close(self, logs: Path | None = None) -> None:
        """Stop the daemon, every model unit and the box; keep log tails in `logs`."""
        errors: list[str] = []
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
        # Each step runs whatever the one before it did: the box must go in any case.
        if self.daemon is not None:
            try:
                self.daemon.stop()
                if logs is not None:
                    (logs / "sparkctl-serve.log").write_text(self.daemon.log_tail(400) + "\n")
            except Exception as e:
                errors.append(f"stopping sparkctl serve: {type(e).__name__}: {e}")
        if self.box is not None:
            try:
                if logs is not None and self.box.init_pid:
                    (logs / "box-journal.log").write_text(self.box.journal(lines=600))
                self.box.systemctl("stop", "sparkctl-*", check=False)
            except Exception as e:  # the box may be half-dead; down() below still removes it
                errors.append(f"stopping the models: {type(e).__name__}: {e}")
            self.box.down()
            self.box = None
        if errors:
            print(f"bench: while tearing down: {'; '.join(errors)}", file=sys.stderr)

    # ------------------------------------------------------------------------------ helpers
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def engine_port(self, model: str) -> int:
        return self.models[model].port

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, headers=self.auth)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(self, path: str, body: dict[str, Any] | None = None, timeout: float = 120) -> tuple[int, bytes]:
        data = json.dumps(body or {}).encode()
        headers = {**self.auth, "Content-Type": "application/json"}
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def state(self, model: str) -> str:
        status, body = self.get(f"/v1/models/{model}")
        return str(json.loads(body)["state"]) if status == 200 else f"http {status}"

    def in_flight(self, model: str) -> int:
        """Leases the daemon counts on `model` (from the admin API)."""
        status, body = self.get("/api/v1/status")
        if status != 200:
            raise RuntimeError(f"/api/v1/status answered HTTP {status}")
        return next(int(m["in_flight"]) for m in json.loads(body)["models"] if m["id"] == model)

    def leases_left(self, model: str, settle: float = 2.0) -> int:
        """Leases still counted `settle` seconds after every client of `model` is gone: 0 unless a
        lease leaked (a request the daemon believes is still in flight)."""
        deadline = time.monotonic() + settle
        while (n := self.in_flight(model)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return n

    def complete(self, model: str, max_tokens: int = 4) -> None:
        """One request through the gateway that must succeed (starts the model if need be)."""
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "warm up"}],
            "max_tokens": max_tokens,
        }
        status, data = self.post("/v1/chat/completions", body)
        if status != 200:
            raise RuntimeError(f"warm-up request for {model} failed: HTTP {status} {data[:300]!r}")

    def stop_model(self, model: str, timeout: float = 30) -> None:
        """Stop through the admin API and wait until systemd has the unit inactive."""
        status, data = self.post(f"/api/v1/models/{model}/stop")
        if status not in (200, 202):
            raise RuntimeError(f"stopping {model} failed: HTTP {status} {data[:300]!r}")
        wait_for(lambda: self.state(model) == "stopped", timeout, f"{model} to stop")
        wait_for(lambda: self.unit_active(model) == "inactive", timeout, f"{service_name(model)} inactive")

    def unit_active(self, model: str) -> str:
        assert self.box is not None
        return self.box.systemctl("is-active", service_name(model), check=False).stdout.strip()

    def unit_times(self, model: str) -> dict[str, float]:
        """systemd's monotonic timestamps of the unit, in seconds (same clock as time.monotonic())."""
        assert self.box is not None
        out = self.box.systemctl("show", *(f"-p{p}" for p in TIMESTAMPS), service_name(model)).stdout
        times = {}
        for line in out.splitlines():
            key, _, value = line.partition("=")
            if value.strip().isdigit():
                times[key.removesuffix("TimestampMonotonic")] = int(value) / 1e6
        return times

    def ready_line(self, model: str, since_wall: float, timeout: float = 5) -> tuple[float, float]:
        """(exec_to_ready_ms, ready_unix) the engine printed after `since_wall`, from the journal."""
        assert self.box is not None
        unit = service_name(model)
        deadline = time.monotonic() + timeout
        while True:
            out = self.box.run(
                "journalctl",
                "--no-pager",
                "-o",
                "cat",
                "-u",
                unit,
                f"--since=@{since_wall - 1:.6f}",
                check=False,
            ).stdout
            found = [(float(a), float(b)) for a, b in READY.findall(out) if float(b) >= since_wall]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{unit} printed no ready line after {since_wall:.3f} in the journal")
            time.sleep(0.05)

    def unit_log(self, model: str, since_wall: float) -> list[tuple[float, str]]:
        """(monotonic s, message) of the unit's journal entries since `since_wall`, as journald
        received them: systemd's job messages ("Stopping …", "Stopped …") among them. systemd
        forgets the timestamps of an inactive unit it unloads; the journal keeps them."""
        assert self.box is not None
        out = self.box.run(
            "journalctl",
            "--no-pager",
            "-o",
            "json",
            "-u",
            service_name(model),
            f"--since=@{since_wall - 1:.6f}",
            check=False,
        ).stdout
        entries = []
        for line in out.splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                e = json.loads(line)
                entries.append((int(e["__MONOTONIC_TIMESTAMP"]) / 1e6, str(e["MESSAGE"])))
        return entries

    def engine_pids(self, model: str) -> list[int]:
        """Host pids of the model's engine (the box has its own pid namespace)."""
        assert self.box is not None
        unit = service_name(model)
        pids: list[int] = []
        for d in self.box.cgroup.rglob(unit):
            for f in d.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids += [int(p) for p in f.read_text().split()]
        out = []
        for pid in pids:
            with contextlib.suppress(OSError):
                if b"emulat" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    out.append(pid)
        return out

    def pin_engine(self, model: str) -> list[int]:
        pids = self.engine_pids(model)
        if not pids:
            raise RuntimeError(f"no engine process found for {model}")
        pin(pids, self.plan.servers)
        return pids

    def daemon_pids(self) -> list[int]:
        assert self.daemon is not None
        return [self.daemon.pid]
