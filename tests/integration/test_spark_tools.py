"""doctor, preflight, pull and images on the sandboxed systemd 252 + Podman 5.4 + Quadlet, as
root inside the box: doctor against a real installed sparkctl (the box has a fake CDI spec and no
NVIDIA driver), preflight against images present and absent in the box's Podman, and
`images build` through Podman's REST API with a small index built on the emulator image."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sparkctl.sandbox.box import Box
from tests.integration.conftest import SPARKCTL, emulated

PORT = 28950
COMMIT = "d" * 40
SPARK = (SPARKCTL,)


@dataclass
class Installed:
    box: Box
    base: Path
    config: Path
    hf: Path
    image: str

    def sparkctl(self, *args: str, check: bool = False, timeout: float = 120) -> tuple[int, str, str]:
        proc = self.box.run(*SPARK, "--config", str(self.config), *args, check=check, timeout=timeout)
        return proc.returncode, proc.stdout, proc.stderr


def _fake_weights(hf: Path, repo: str) -> None:
    """A complete snapshot as huggingface_hub lays it out (without a file listing)."""
    base = hf / "hub" / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs/main").write_text(COMMIT)
    (base / "snapshots" / COMMIT).mkdir(parents=True, exist_ok=True)
    (base / "snapshots" / COMMIT / "config.json").write_text("{}")


@pytest.fixture(scope="module")
def installed(box: Box, emulator_image: str) -> Iterator[Installed]:
    base = box.path / "spark-tools"
    catalog = base / "models"
    hf = base / "hf"
    emulated(catalog, "st-ready", 28951, container=True, source={"hf_repo": "org/ready"})
    emulated(catalog, "st-no-weights", 28952, container=True, source={"hf_repo": "org/absent"})
    emulated(
        catalog, "st-no-image", 28953, container=True, engine={"image": "localhost/sparkctl-absent:latest"}
    )
    emulated(
        catalog,
        "st-pinned",
        28954,
        container=True,
        engine={"image": "docker.io/library/absent:1@sha256:" + "0" * 64},
    )
    (base / "compile").mkdir(parents=True, exist_ok=True)
    _fake_weights(hf, "org/ready")
    _fake_weights(hf, "org/model")
    config = base / "sparkctl.toml"
    config.write_text(
        f'[gateway]\nlisten = ["127.0.0.1:{PORT}"]\n'
        f'[catalog]\ndirs = ["{catalog}"]\n'
        f'[runtime]\ncontainer_network = "host"\nsparkctl = "{SPARKCTL}"\nhf_cache = "{hf}"\n'
        f'compile_cache = "{base / "compile"}"\n'
    )
    box.run(SPARKCTL, "--config", str(config), "install", timeout=300)
    yield Installed(box, base, config, hf, emulator_image)
    box.run(SPARKCTL, "--config", str(config), "uninstall", timeout=120)
    box.systemctl("reset-failed", check=False)
    for tag in ("localhost/st-a:1", "localhost/st-a:also", "localhost/st-b:1"):
        box.run("podman", "rmi", "-f", tag, check=False)
    shutil.rmtree(base, ignore_errors=True)


def test_doctor_on_the_sandboxed_host(installed: Installed) -> None:
    code, out, err = installed.sparkctl("doctor", "--json")
    checks = {c["check"]: c for c in json.loads(out)}
    passing = {
        "systemd": "systemd 252",
        "cgroup v2": "unified hierarchy on /sys/fs/cgroup",
        "Podman": "Podman 5.4.2",
        "Notify=healthy": "available (Podman 5.4.2)",
        "Podman API": "/run/podman/podman.sock (used by sparkctl pull and sparkctl images)",
        "NVIDIA CDI spec": "nvidia.com/gpu=all in /etc/cdi/sparkctl-box-fake-gpu.yaml",
        "gateway port": f"127.0.0.1:{PORT} held by sparkctl.socket",
        "polkit rule": "/etc/polkit-1/rules.d/50-sparkctl.rules",
        "sparkctl.socket": "enabled and listening",
    }
    for name, detail in passing.items():
        assert checks[name]["status"] == "pass" and checks[name]["detail"] == detail, checks[name]
    assert checks["Quadlet"]["status"] == "pass" and checks["Quadlet"]["detail"].startswith("Quadlet 5.4.2 (")
    # (the box's key file is shared by the tests that install: as many keys as they made)
    keys = checks["API key"]
    assert keys["status"] == "pass" and re.fullmatch(
        r"\d+ keys? \([1-9]\d* admin\) in /etc/sparkctl/api-keys", keys["detail"]
    )
    # The box has no GPU driver: a failure with its fix, so doctor exits 1.
    assert (
        checks["NVIDIA driver"]["status"] == "fail"
        and "nvidia-smi is not installed" in checks["NVIDIA driver"]["detail"]
    )
    assert checks["models"]["detail"].startswith(
        "1 of 4 enabled models have their weights and image here: st-ready"
    )
    assert code == 1 and err.rstrip().endswith("passed")

    code, out, _ = installed.sparkctl("doctor")
    assert "FAIL  NVIDIA driver" in out and "fix: DGX OS ships the driver" in out


def test_preflight_against_the_boxes_podman(installed: Installed) -> None:
    common = ["--hf-cache", str(installed.hf)]
    ok = installed.box.run(
        *SPARK,
        "preflight",
        "--model",
        "st-ready",
        *common,
        "--repo",
        "org/ready",
        "--image",
        installed.image,
        check=False,
    )
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr

    local = installed.box.run(
        *SPARK,
        "preflight",
        "--model",
        "st-no-image",
        *common,
        "--repo",
        "org/model",
        "--image",
        "localhost/sparkctl-absent:latest",
        check=False,
    )
    assert local.returncode == 1
    assert local.stderr.strip() == (
        "error: image localhost/sparkctl-absent:latest is not on this host: "
        "run sparkctl images build localhost/sparkctl-absent:latest"
    )
    pinned = "docker.io/library/absent:1@sha256:" + "0" * 64
    external = installed.box.run(
        *SPARK,
        "preflight",
        "--model",
        "st-pinned",
        *common,
        "--repo",
        "org/model",
        "--image",
        pinned,
        check=False,
    )
    assert external.returncode == 1 and external.stderr.strip() == (
        f"error: image {pinned} is not on this host: run sparkctl pull st-pinned"
    )
    weights = installed.box.run(
        *SPARK,
        "preflight",
        "--model",
        "st-no-weights",
        *common,
        "--repo",
        "org/absent",
        "--image",
        installed.image,
        check=False,
    )
    assert weights.returncode == 1
    assert weights.stderr.splitlines()[-1] == (
        f"error: weights for org/absent@main are not in {installed.hf}: run sparkctl pull st-no-weights"
    )


def test_pull_checks_images_through_podmans_api(installed: Installed) -> None:
    code, out, err = installed.sparkctl("pull", "--no-weights", "st-ready")
    assert code == 0 and out == "st-ready: ready\n", err
    assert f"st-ready: image {installed.image} present" in err

    code, _, err = installed.sparkctl("pull", "--no-weights", "st-no-image")
    assert code == 1
    assert "error: image localhost/sparkctl-absent:latest is not built on this host" in err
    assert "hint: sparkctl images build localhost/sparkctl-absent:latest" in err

    # The box reaches no registry: a pull is attempted through the API and its failure reported.
    code, _, err = installed.sparkctl("pull", "--no-weights", "st-pinned")
    assert code == 1 and "error: pulling docker.io/library/absent:1@sha256:" in err


def test_images_build_streams_the_log_and_builds_bases_first(installed: Installed) -> None:
    ctx = installed.base / "containerfiles"
    (ctx / "a").mkdir(parents=True)
    (ctx / "b").mkdir()
    (ctx / "greeting.txt").write_text("hello\n")
    # No RUN step: the box's crun may not set the rlimits a build container asks for.
    (ctx / "a/Containerfile").write_text(
        f"FROM {installed.image}\nARG WORD=plain\nCOPY greeting.txt /greeting.txt\nLABEL word=${{WORD}}\n"
    )
    (ctx / "b/Containerfile").write_text("FROM localhost/st-a:1\nLABEL stage=b\n")
    (ctx / "index.toml").write_text(
        '[images.a]\ntags = ["localhost/st-a:1", "localhost/st-a:also"]\ncontainerfile = "a/Containerfile"\n'
        'description = "a test base"\n[images.a.args.WORD]\ndefault = "plain"\nhelp = "a word to bake in"\n'
        '[images.b]\ntags = ["localhost/st-b:1"]\ncontainerfile = "b/Containerfile"\ndescription = "on a"\n'
        'bases = ["localhost/st-a:1"]\n'
        '[images.c]\ntags = ["localhost/st-c:1"]\ncontainerfile = "b/Containerfile"\ndescription = "blocked"\n'
        'requires = ["patches/secret.patch"]\n'
    )
    index = str(ctx / "index.toml")
    code, out, err = installed.sparkctl(
        "images", "build", "--index", index, "--build-arg", "WORD=baked", "localhost/st-b:1", timeout=300
    )
    assert code == 0, err
    assert out == "built 2 images: localhost/st-a:1, localhost/st-b:1\n"
    assert "building localhost/st-a:1 from a/Containerfile (WORD=baked)" in err
    assert (
        "STEP 3/5: COPY greeting.txt /greeting.txt" in err and "COMMIT localhost/st-a:1" in err
    )  # Podman's log
    assert err.index("built localhost/st-a:1, localhost/st-a:also") < err.index("building localhost/st-b:1")
    for tag in ("localhost/st-a:1", "localhost/st-a:also", "localhost/st-b:1"):
        installed.box.run("podman", "image", "exists", tag)
    labels = json.loads(installed.box.run("podman", "image", "inspect", "localhost/st-b:1").stdout)[0][
        "Labels"
    ]
    assert labels["word"] == "baked"  # the build argument reached the build
    assert labels["io.sparkctl.image"] == "b" and len(labels["io.sparkctl.inputs-sha256"]) == 64
    assert not list(ctx.glob(".containerfile.*"))  # nothing was written into the build context

    # A base that is here is not rebuilt; a missing input stops everything before any build.
    code, out, err = installed.sparkctl("images", "build", "--index", index, "localhost/st-b:1", timeout=300)
    assert code == 0 and out == "built 1 image: localhost/st-b:1\n", err
    code, out, err = installed.sparkctl("images", "build", "--index", index, "localhost/st-c:1")
    assert code == 1 and out == ""
    assert "localhost/st-c:1 needs file containerfiles/patches/secret.patch" in err
    assert "error: 1 image cannot be built yet (nothing was built)" in err

    # `images list` sees what is here, and what was built from an older Containerfile.
    catalog = installed.base / "models"
    emulated(catalog, "st-built", 28955, container=True, engine={"image": "localhost/st-b:1"})
    try:
        code, out, err = installed.sparkctl("images", "list", "--index", index, "--json")
        rows = {r["image"]: r for r in json.loads(out)}
        assert (
            rows["localhost/st-b:1"]["state"] == "present" and rows["localhost/st-b:1"]["source"] == "build:b"
        )
        assert rows["localhost/sparkctl-absent:latest"]["state"] == "missing"
        assert rows[installed.image]["state"] == "present"
        (ctx / "b/Containerfile").write_text("FROM localhost/st-a:1\nLABEL stage=b2\n")
        code, out, err = installed.sparkctl("images", "list", "--index", index, "--json")
        rows = {r["image"]: r for r in json.loads(out)}
        assert rows["localhost/st-b:1"]["state"] == "outdated"
    finally:
        (catalog / "st-built.toml").unlink()


def test_a_model_unit_with_the_preflight_fails_fast_and_names_the_pull(installed: Installed) -> None:
    """The start-time check as a model unit would run it (ExecStartPre=, before Podman starts the
    container): a start without weights fails in moments, and the journal says what to run."""
    from sparkctl.units.quoting import command_line

    check = command_line(
        [
            SPARKCTL,
            "preflight",
            "--model",
            "st-no-weights",
            "--hf-cache",
            str(installed.hf),
            "--repo",
            "org/absent",
            "--revision",
            "main",
            "--image",
            installed.image,
        ]
    )
    unit = installed.box.quadlet_dir / "sparkctl-st-preflight.container"
    unit.write_text(
        f"[Container]\nImage={installed.image}\nPull=never\nExec=sleep 600\n\n"
        f"[Service]\nExecStartPre={check}\nTimeoutStartSec=60\nRestart=no\n"
    )
    try:
        installed.box.daemon_reload()
        started = time.monotonic()
        proc = installed.box.systemctl("start", "sparkctl-st-preflight.service", check=False)
        elapsed = time.monotonic() - started
        assert proc.returncode != 0 and elapsed < 20, (proc.returncode, elapsed)
        result = installed.box.systemctl(
            "show", "-p", "Result", "--value", "sparkctl-st-preflight.service"
        ).stdout
        assert result.strip() == "exit-code"
        journal = installed.box.journal(unit="sparkctl-st-preflight.service", lines=50)
        assert (
            f"error: weights for org/absent@main are not in {installed.hf}: run sparkctl pull st-no-weights"
            in journal
        )
        ran = installed.box.run("podman", "ps", "-a", "--format", "{{.Names}}").stdout
        assert "sparkctl-st-preflight" not in ran  # the container was never created
    finally:
        unit.unlink(missing_ok=True)
        installed.box.daemon_reload()
        installed.box.systemctl("reset-failed", check=False)
