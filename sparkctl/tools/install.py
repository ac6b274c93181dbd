"""`sparkctl install` and `uninstall`: put sparkctl on a host as a systemd service.

System mode (the default) runs as root: it renders the catalog, writes sparkctl's own units, its
system user, directories and polkit rule, creates an API key if there is none (printed once),
reloads systemd over D-Bus, enables and starts `sparkctl.socket` and the models' sockets, and
starts the preload models. `--user` sets up a per-user stack instead: the user's systemd manager
(`systemctl --user`), the user Quadlet directory (rootless Podman), everything under the user's
home. Both are idempotent; the daemon itself never needs to reload systemd.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sparkctl.apikeys import KeyStore, edit
from sparkctl.apikeys.engine import engine_env_text
from sparkctl.catalog import Catalog, load_catalog, span
from sparkctl.core.systemd import Systemd
from sparkctl.errors import InstallError
from sparkctl.paths import POLKIT_RULE, SHIPPED_CATALOG, SHIPPED_UNITS, write_atomic
from sparkctl.settings import DEFAULT_CONFIG, Settings, load_settings, split_host_port, user_config_path
from sparkctl.tools.pull import TOKEN_FILE
from sparkctl.units.names import ALL_UNITS_GLOBS, DAEMON_SOCKET, DAEMON_UNITS, service_name, socket_name
from sparkctl.units.own import own_units, polkit_rule
from sparkctl.units.render import render
from sparkctl.units.sync import sync, write_if_changed

SYSUSERS = Path("/etc/sysusers.d/sparkctl.conf")
TMPFILES = Path("/etc/tmpfiles.d/sparkctl.conf")


def sparkctl_executable() -> Path:
    """The `sparkctl` that is running this: the one units will call."""
    candidate = Path(sys.argv[0])
    if candidate.name == "sparkctl" and candidate.exists():
        return candidate.resolve()
    found = shutil.which("sparkctl") or str(Path(sys.executable).parent / "sparkctl")
    return Path(found).resolve()


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    new_key: str | None = None
    user: bool = False

    def add(self, line: str) -> None:
        self.lines.append(line)


def default_config_text(executable: Path, *, user: bool, home: Path) -> str:
    lines = [
        "# sparkctl configuration (see docs/). Keys left out take their defaults.",
        "[runtime]",
        f'sparkctl = "{executable}"',
    ]
    if user:
        config, cache = home / ".config", home / ".cache"
        lines += [
            f'hf_cache = "{cache}/sparkctl/huggingface"',
            f'compile_cache = "{cache}/sparkctl/compile"',
            f'engine_env = "{config}/sparkctl/engine.env"',
            "[systemd]",
            'bus = "user"',
            f'quadlet_dir = "{config}/containers/systemd"',
            f'unit_dir = "{config}/systemd/user"',
            "[gateway]",
            f'api_keys_file = "{config}/sparkctl/api-keys"',
            "[catalog]",
            f'dirs = ["{SHIPPED_CATALOG}", "{config}/sparkctl/models"]',
        ]
    return "\n".join(lines) + "\n"


async def install(
    config: Path | None = None, *, user: bool = False, executable: Path | None = None
) -> Report:
    _check_caller(user)
    report = Report(user=user)
    exe = executable or sparkctl_executable()
    home = Path.home()
    config = config or (user_config_path(home) if user else DEFAULT_CONFIG)
    settings, catalog = _load(config, exe, user=user, home=home, report=report)
    if user:
        for d in (settings.runtime.hf_cache, settings.runtime.compile_cache, config.parent / "models"):
            d.mkdir(parents=True, exist_ok=True)
    else:
        _system_files(catalog, report)
        _share_cache(settings.runtime.hf_cache)
        if TOKEN_FILE.exists():
            # Gated models, pulled by the daemon for the other nodes of a cluster (#15).
            _give_group(TOKEN_FILE)
    _write_units(settings, catalog, exe, config, user=user, report=report)
    _ensure_admin_key(settings, user=user, report=report)
    _peer_keys(settings, user=user, report=report)
    await _enable_and_start(settings, catalog, report)
    if user:
        report.add(f"to start at boot without a login: sudo loginctl enable-linger {_username()}")
    return report


def _check_caller(user: bool) -> None:
    """A system install needs root; a user install needs the user's own session, not sudo's."""
    if user and os.geteuid() == 0 and not os.environ.get("XDG_RUNTIME_DIR"):
        raise InstallError("--user installs into your own systemd manager: run it as that user (no sudo).")
    if not user and os.geteuid() != 0:
        raise InstallError("sparkctl install writes system units: run it as root (sudo), or use --user.")


def _load(config: Path, exe: Path, *, user: bool, home: Path, report: Report) -> tuple[Settings, Catalog]:
    """The settings (a default file written first if there is none) and the catalog they name."""
    if not config.exists():
        write_atomic(config, default_config_text(exe, user=user, home=home), 0o644)
        report.add(f"wrote {config}")
    settings = load_settings(config)
    if settings.runtime.sparkctl != exe:
        report.add(
            f"note: {config} names {settings.runtime.sparkctl} as the sparkctl units call; this is {exe}"
        )
    catalog = load_catalog(settings)  # an invalid catalog stops here, before anything is written
    return settings, catalog


def _write_units(
    settings: Settings, catalog: Catalog, exe: Path, config: Path, *, user: bool, report: Report
) -> None:
    _ensure_engine_key(settings, user=user, report=report)
    files = own_units(settings, exe, config, user=user) + render(catalog, settings)
    changes = sync(files, {"quadlet": settings.systemd.quadlet_dir, "unit": settings.systemd.unit_dir})
    report.add(
        f"units: {len(changes.added)} added, {len(changes.changed)} changed, "
        f"{len(changes.removed)} removed ({len(catalog.enabled)} models)"
    )


def _ensure_engine_key(settings: Settings, *, user: bool, report: Report) -> None:
    """The engine key every model unit reads and the daemon sends: root's and the daemon's
    group's (a user stack: the user's alone). Written once, kept across installs."""
    path = settings.runtime.engine_env
    if not path.exists():
        write_atomic(path, engine_env_text(), 0o600)
        report.add(f"wrote {path} (the key the engines require; only the daemon sends it)")
    if not user:
        _give_group(path)


def _ensure_admin_key(settings: Settings, *, user: bool, report: Report) -> None:
    """An admin key if the key file has none: created here, shown once through the report."""
    with edit(settings.gateway.api_keys_file, create_dir=True) as store:
        if not any(e.admin for e in store.entries()):
            report.new_key = store.add(_free_name(store, "admin"), admin=True)
    if not user:
        _give_group(settings.gateway.api_keys_file)


def _peer_keys(settings: Settings, *, user: bool, report: Report) -> None:
    """A cluster's peers' key files (#15), readable by the daemon's group like the key file; one
    not there yet is said, since the daemon refuses to start without it."""
    for peer in settings.cluster.peers:
        path = peer.api_key_file
        if not path.exists():
            report.add(
                f"note: cluster peer {peer.name}: put an admin key of {peer.name}'s in {path} "
                f"(`sparkctl keys add {settings.cluster.node} --admin` on {peer.name}), then run "
                "install again; the daemon does not start without it"
            )
        elif not user:
            _give_group(path)


async def _enable_and_start(settings: Settings, catalog: Catalog, report: Report) -> None:
    """Reload systemd, enable and start the daemon's and the models' sockets, start the preloads."""
    systemd = await Systemd.connect(settings.systemd.bus)
    try:
        await systemd.reload()
        # (a worker part of a spanning model has no port: its owner takes the requests)
        served = [m for m in catalog.enabled if span.serves_here(m.spec, settings.cluster)]
        sockets = [DAEMON_SOCKET] + [socket_name(m.id) for m in served if m.direct_port]
        await systemd.enable(sockets)
        for unit in sockets:
            await (await systemd.start(unit)).wait()
        report.add(f"enabled and started {len(sockets)} sockets")
        for model in served:
            if model.spec.serve.preload:
                result = await (await systemd.start(service_name(model.id))).wait()
                report.add(f"preload {model.id}: {result}")
    finally:
        await systemd.close()


def _system_files(catalog: Catalog, report: Report) -> None:
    """The system user, directories and polkit rule (root only)."""
    for dst, text in (
        (SYSUSERS, (SHIPPED_UNITS / "sparkctl.sysusers").read_text()),
        (TMPFILES, (SHIPPED_UNITS / "sparkctl.tmpfiles").read_text()),
        (POLKIT_RULE, polkit_rule(catalog)),
    ):
        if write_if_changed(dst, text):
            report.add(f"wrote {dst}")
    _run(["systemd-sysusers", str(SYSUSERS)])
    _run(["systemd-tmpfiles", "--create", str(TMPFILES)])


def _username() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _free_name(store: KeyStore, base: str) -> str:
    names = {e.name for e in store.entries()}
    n, name = 1, base
    while name in names:
        n += 1
        name = f"{base}{n}"
    return name


def _share_cache(cache: Path) -> None:
    """The Hugging Face cache, root's and the daemon's group's (setgid, group-writable): the
    daemon pulls into it for the other nodes of a cluster (#15), `sudo sparkctl pull` as
    before, and either finishes what the other began. What is already there follows."""
    try:
        gid = grp.getgrnam("sparkctl").gr_gid
    except KeyError:
        return
    cache.mkdir(parents=True, exist_ok=True)
    hub = cache / "hub"
    hub.mkdir(exist_ok=True)
    os.chown(cache, 0, gid)
    os.chmod(cache, 0o2775)
    for root, dirs, files in os.walk(hub):
        for name in dirs:
            path = os.path.join(root, name)
            os.chown(path, -1, gid, follow_symlinks=False)
            os.chmod(path, (os.stat(path).st_mode & 0o7777) | 0o2070)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chown(path, -1, gid)
                os.chmod(path, (os.stat(path).st_mode & 0o7777) | 0o060)
    os.chown(hub, -1, gid)
    os.chmod(hub, (hub.stat().st_mode & 0o7777) | 0o2070)


def _give_group(path: Path) -> None:
    """A secret file (a key file, the Hugging Face token) is root's, readable by the daemon's group."""
    try:
        gid = grp.getgrnam("sparkctl").gr_gid
    except KeyError:
        return
    os.chown(path, 0, gid)
    os.chmod(path, 0o640)


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InstallError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")


async def uninstall(config: Path | None = None, *, user: bool = False) -> Report:
    """Stop and remove sparkctl's units; configuration, keys and caches stay."""
    if not user and os.geteuid() != 0:
        raise InstallError("sparkctl uninstall removes system units: run it as root (sudo), or use --user.")
    report = Report(user=user)
    path = config or (user_config_path() if user else DEFAULT_CONFIG)
    settings = load_settings(path if path.exists() else None)
    systemd = await Systemd.connect(settings.systemd.bus)
    try:
        units = [u for u, _, _ in await systemd.list_units(list(ALL_UNITS_GLOBS))]
        for unit in sorted(units, key=lambda u: u.endswith(".socket")):  # services first
            await (await systemd.stop(unit)).wait()
        await systemd.disable([DAEMON_SOCKET, *[u for u in units if u.endswith(".socket")]])
        removed = sync([], {"quadlet": settings.systemd.quadlet_dir, "unit": settings.systemd.unit_dir})
        for name in DAEMON_UNITS:
            (settings.systemd.unit_dir / name).unlink(missing_ok=True)
        if not user:
            for extra in (POLKIT_RULE, SYSUSERS, TMPFILES):
                extra.unlink(missing_ok=True)
        await systemd.reload()
        report.add(f"stopped {len(units)} units, removed {len(removed.removed)} model units")
    finally:
        await systemd.close()
    kept = path.parent if user else Path("/etc/sparkctl")
    report.add(f"kept: {kept} (configuration, API keys) and the model caches")
    return report


def api_url(settings: Settings) -> str:
    host, port = split_host_port(settings.gateway.listen[0])
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/v1"
