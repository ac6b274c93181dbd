"""`sparkctl render --check`: run the real Quadlet generator and `systemd-analyze verify` over
rendered units, and say plainly which of them are not installed here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sparkctl.settings import DEFAULT_CONFIG, Settings
from sparkctl.units.names import generated_service
from sparkctl.units.own import own_units
from sparkctl.units.render import UnitFile

QUADLET_CANDIDATES = (
    "/usr/libexec/podman/quadlet",
    "/usr/lib/podman/quadlet",
    "/usr/lib/systemd/system-generators/podman-system-generator",
    # sparkctl's sandbox keeps a Podman 5 with its Quadlet here (sparkctl/sandbox/install.sh)
    "/opt/sparkctl-sandbox/podman5/usr/libexec/podman/quadlet",
)


@dataclass
class Report:
    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def fail(self, line: str) -> None:
        self.ok = False
        self.lines.append(line)


def find_quadlet() -> str | None:
    override = os.environ.get("SPARKCTL_QUADLET")
    if override:
        return override
    return next((c for c in QUADLET_CANDIDATES if os.access(c, os.X_OK)), None)


def check(files: list[UnitFile], dirs: dict[str, Path], settings: Settings) -> Report:
    report = Report()
    with tempfile.TemporaryDirectory(prefix="sparkctl-check-") as tmp:
        generated = Path(tmp) / "generated"
        generated.mkdir()
        containers = [f for f in files if f.destination == "quadlet"]
        if containers:
            _run_quadlet(dirs["quadlet"], containers, generated, report)
        services = sorted(generated.glob("*.service")) + [
            dirs["unit"] / f.name for f in files if f.destination == "unit"
        ]
        _run_verify(services, Path(tmp), settings, report)
    return report


def _run_quadlet(quadlet_dir: Path, containers: list[UnitFile], out: Path, report: Report) -> None:
    quadlet = find_quadlet()
    if quadlet is None:
        report.lines.append(
            "quadlet: not installed here (Podman ≥ 4.4 provides it); container units not checked"
        )
        return
    env = dict(os.environ, QUADLET_UNIT_DIRS=str(quadlet_dir))
    proc = subprocess.run([quadlet, out], env=env, capture_output=True, text=True, check=False)
    version = subprocess.run(
        [quadlet, "-version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    missing = [c.name for c in containers if not (out / generated_service(c.name)).is_file()]
    for line in proc.stderr.splitlines():
        if line.strip():
            report.lines.append(f"quadlet: {line}")
    if proc.returncode != 0 or missing:
        report.fail(f"quadlet {version}: generated no service for: {', '.join(missing) or '(see above)'}")
    else:
        n = sum(c.name.endswith(".container") for c in containers)
        others = ", ".join(c.name for c in containers if not c.name.endswith(".container"))
        report.lines.append(
            f"quadlet {version}: {n} container units generated" + (f", and {others}" if others else "")
        )


def _run_verify(units: list[Path], tmp: Path, settings: Settings, report: Report) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        report.lines.append("systemd-analyze: not installed here; units not verified")
        return
    if not units:
        return
    # verify loads units from the directories of the files it is given: put them side by side
    # with sparkctl's own service, which every model socket hands its connections to.
    staged = tmp / "verify"
    staged.mkdir()
    for unit in units:
        shutil.copy(unit, staged / unit.name)
    for own in own_units(settings, settings.runtime.sparkctl, DEFAULT_CONFIG):
        (staged / own.name).write_text(own.text)
    names = [str(staged / u.name) for u in units]
    proc = subprocess.run(
        [analyze, "verify", "--man=no", "--recursive-errors=no", *names],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, SYSTEMD_LOG_COLOR="0"),
    )
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    for line in problems:
        report.lines.append(f"systemd-analyze: {line}")
    if proc.returncode != 0 or problems:
        report.fail(f"systemd-analyze verify: {len(units)} units, problems above")
    else:
        report.lines.append(f"systemd-analyze verify: {len(units)} units OK")
