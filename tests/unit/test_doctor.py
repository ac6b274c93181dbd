"""`sparkctl doctor` against constructed hosts: a healthy Spark, then one thing wrong at a time
(no CDI spec, Podman 4.3, Podman 4.9, no key, a full disk, cgroup v1, the port taken, …), each
failing state with its fix — the fix that is right for the host's distribution (Debian 12, DGX OS
7, …) — and a demo's sandbox. The real host (this machine, and the sandbox in
tests/integration/test_spark_tools.py) is checked too."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparkctl import __version__
from sparkctl.apikeys import edit
from sparkctl.catalog import load_catalog, span
from sparkctl.cli import cli
from sparkctl.settings import Settings
from sparkctl.tools import doctor
from sparkctl.tools.demo_locator import Demo
from sparkctl.tools.doctor import CDI_FIX, GIB, Check, Disk, Host, Result, run_checks
from sparkctl.tools.doctor.distro import distro
from sparkctl.units.own import polkit_rule
from tests.helpers import write_model

# What `nvidia-ctk cdi generate` writes on a Spark (abridged), and the `systemctl show` of a socket.
NVIDIA_CTK_SPEC = """---
cdiVersion: 0.5.0
containerEdits:
  deviceNodes:
  - path: /dev/nvidiactl
devices:
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
  name: "0"
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
  name: all
kind: nvidia.com/gpu
"""
DGX_OS_7 = 'PRETTY_NAME="Ubuntu 24.04.3 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\n'
DEBIAN_12 = (
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
)
SOCKET_SHOW = (
    "ActiveState=active\nListen=127.0.0.1:8009 (Stream)\nListen=/run/sparkctl/sparkctl.sock (Stream)\n"
)


class FakeCommands:
    """`run` for a Host: answers by command line, records what was asked, None = not installed."""

    def __init__(self, answers: dict[str, Result | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, argv: Sequence[str]) -> Result | None:
        line = " ".join(argv)
        self.asked.append(line)
        for key, answer in self.answers.items():
            if line == key or line.endswith(key):
                return answer
        return None


class Spark:
    """A DGX Spark that is ready for sparkctl, laid out under tmp_path; tests then break one thing."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "root"
        self.tmp = tmp_path
        self._written: set[str] = set()
        self.files: dict[str, str] = {
            "/run/systemd/system/.exists": "",
            "/proc/self/mounts": "proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev 0 0\n",
            "/proc/meminfo": "MemTotal:       127598944 kB\nMemAvailable:   121000000 kB\nSwapTotal:       67108860 kB\n",
            "/etc/cdi/nvidia.yaml": NVIDIA_CTK_SPEC,
            "/usr/libexec/podman/quadlet": "",
            "/run/podman/podman.sock": "",
            "/usr/lib/polkit-1/polkitd": "",
            "/etc/os-release": DGX_OS_7,
            "/etc/dgx-release": 'DGX_NAME="DGX Spark"\n',
        }
        self.commands: dict[str, Result | None] = {
            "systemctl --version": Result(0, "systemd 255 (255.4-1ubuntu8.6)\n+PAM +AUDIT\n"),
            "podman --version": Result(0, "podman version 4.9.3\n"),
            "quadlet -version": Result(0, "4.9.3\n"),
            "nvidia-smi --query-gpu=name,driver_version --format=csv,noheader": Result(
                0, "NVIDIA GB10, 580.95.05\n"
            ),
            "systemctl show sparkctl.socket --property=ActiveState,Listen": Result(0, SOCKET_SHOW),
            "systemctl is-enabled sparkctl.socket": Result(0, "enabled\n"),
            "systemctl is-active sparkctl.socket": Result(0, "active\n"),
            "podman image exists localhost/sparkctl-emulator:latest": Result(0, ""),
        }
        self.free = 900 * GIB
        self.port_free = False  # sparkctl.socket holds 8009
        self.demo: Demo | None = None  # no `sparkctl demo` runs here
        self.keys = self.root / "etc/sparkctl/api-keys"
        with edit(self.keys, create_dir=True) as store:
            store.add("admin", admin=True)
        catalog = self.tmp / "models"
        write_model(catalog, "ready-model", source={"hf_repo": "org/ready"})
        commit = "c" * 40
        repo = self.root / "var/lib/sparkctl/huggingface/hub/models--org--ready"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
        # Host paths (keys, HF cache) are the defaults, under the fake root; the catalog is config.
        self.settings_data: dict[str, dict[str, object]] = {"catalog": {"dirs": [str(catalog)]}}
        # what `sparkctl install` wrote for this catalog
        self.files["/etc/polkit-1/rules.d/50-sparkctl.rules"] = polkit_rule(load_catalog(self.settings()))

    def check(self, check: Callable[[Host, Settings], Check]) -> Check:
        return check(self.host(), self.settings())

    def settings(self) -> Settings:
        return Settings.model_validate(self.settings_data)

    def host(self) -> Host:
        for gone in self._written - set(self.files):
            path = self.root / gone.lstrip("/")
            path.unlink(missing_ok=True)
            while path.parent != self.root and not any(path.parent.iterdir()):
                path = path.parent
                path.rmdir()  # an emptied directory goes too (/run/systemd/system is the signal)
        self._written = set(self.files)
        for name, text in self.files.items():
            target = self.root / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        return Host(
            root=self.root,
            run=FakeCommands(self.commands),
            disk=lambda p: Disk(p, 1000 * GIB, self.free),
            port_free=lambda _h, _p: self.port_free,
            euid=0,
            demo=lambda: self.demo,
        )


@pytest.fixture
def spark(tmp_path: Path) -> Spark:
    return Spark(tmp_path)


def assert_fails(check: Check, *, detail: str, fix: str) -> None:
    assert check.status == "fail", check
    assert detail in check.detail, check.detail
    assert check.fix is not None and fix in check.fix, check.fix


def test_a_ready_spark_passes_everything_but_notify_healthy(spark: Spark) -> None:
    results = {c.name: c for c in run_checks(spark.settings(), spark.host())}
    not_passing = {n: c for n, c in results.items() if c.status != "pass"}
    assert set(not_passing) == {"Notify=healthy"}, not_passing
    # Podman 4.9 (DGX OS 7): a warning that explains it does not matter.
    assert "not available in Podman 4.9.3 (needs 5.0); fine for sparkctl" in results["Notify=healthy"].detail
    assert results["systemd"].detail == "systemd 255"
    assert results["Podman"].detail == "Podman 4.9.3"
    assert results["NVIDIA CDI spec"].detail == "nvidia.com/gpu=all in /etc/cdi/nvidia.yaml"
    assert results["NVIDIA driver"].detail == "NVIDIA GB10, driver 580.95.05"
    assert results["unified memory"].detail == "121.7 GiB total, 115.4 GiB available"
    assert results["gateway port"].detail == "127.0.0.1:8009 held by sparkctl.socket"
    assert results["API key"].detail == "1 key (1 admin) in /etc/sparkctl/api-keys"
    assert results["models"].detail.startswith("1 of 1 enabled models have their weights and image here")


def test_no_cdi_spec(spark: Spark) -> None:
    del spark.files["/etc/cdi/nvidia.yaml"]
    assert_fails(spark.check(doctor.check_cdi), detail="no spec in /etc/cdi or /var/run/cdi", fix=CDI_FIX)


def test_a_cdi_spec_without_the_all_device_and_one_in_var_run(spark: Spark) -> None:
    spark.files["/etc/cdi/nvidia.yaml"] = NVIDIA_CTK_SPEC.replace("name: all", "name: gpu1")
    assert_fails(spark.check(doctor.check_cdi), detail="none of /etc/cdi/nvidia.yaml defines", fix=CDI_FIX)
    spark.files["/var/run/cdi/nvidia.json"] = json.dumps(
        {"cdiVersion": "0.6.0", "kind": "nvidia.com/gpu", "devices": [{"name": "all", "containerEdits": {}}]}
    )
    assert spark.check(doctor.check_cdi).status == "pass"


def test_podman_4_3_has_no_quadlet(spark: Spark) -> None:
    spark.commands["podman --version"] = Result(0, "podman version 4.3.1\n")
    del spark.files["/usr/libexec/podman/quadlet"]
    assert_fails(
        spark.check(doctor.check_podman),
        detail="Podman 4.3.1 predates Quadlet (4.4)",
        fix="sudo apt update && sudo apt install podman: DGX OS 7 (Ubuntu 24.04) ships Podman 4.9",
    )
    assert_fails(spark.check(doctor.check_quadlet), detail="generator is not installed", fix="Podman check")
    assert spark.check(doctor.check_notify_healthy).status == "warn"


def test_debian_12_gets_a_fix_that_works_there(spark: Spark) -> None:
    """`apt install podman` on bookworm brings 4.3 (no Quadlet), and bookworm-backports has none:
    the fix must say so and name what works."""
    spark.files["/etc/os-release"] = DEBIAN_12
    del spark.files["/etc/dgx-release"]
    debian_fix = (
        "on Debian 12 `apt install podman` gives Podman 4.3, which has no Quadlet, and "
        "bookworm-backports has no Podman: upgrade to Debian 13 (its `sudo apt install podman` gives "
        "5.4, with Quadlet) or run sparkctl on DGX OS 7 / Ubuntu 24.04 (Podman 4.9); meanwhile "
        "`sparkctl demo` runs its own Podman 5 in a sandbox"
    )
    spark.commands["podman --version"] = None
    assert spark.check(doctor.check_podman) == Check("Podman", "fail", "Podman is not installed", debian_fix)
    spark.commands["podman --version"] = Result(0, "podman version 4.3.1\n")
    old = spark.check(doctor.check_podman)
    assert old.status == "fail" and old.fix == debian_fix
    del spark.files["/usr/libexec/podman/quadlet"]
    assert spark.check(doctor.check_quadlet).fix == "it comes with Podman 4.4 or newer: see the Podman check"


@pytest.mark.parametrize(
    ("os_release", "dgx", "name", "fix"),
    [
        (
            DGX_OS_7,
            True,
            "DGX OS 7 (Ubuntu 24.04)",
            "sudo apt install podman: DGX OS 7 (Ubuntu 24.04) ships Podman 4.9 (universe), with Quadlet",
        ),
        (DGX_OS_7, False, "Ubuntu 24.04", "sudo apt install podman: Ubuntu 24.04 ships Podman 4.9"),
        (
            DGX_OS_7.replace("24.04", "22.04"),
            True,
            "DGX OS 6 (Ubuntu 22.04)",
            "DGX OS 6 (Ubuntu 22.04) packages Podman 3.4, which has no Quadlet: upgrade to DGX OS 7",
        ),
        (DGX_OS_7.replace("24.04", "22.04"), False, "Ubuntu 22.04", "upgrade to Ubuntu 24.04 (Podman 4.9"),
        (
            DEBIAN_12.replace('"12"', '"13"'),
            False,
            "Debian 13",
            "sudo apt install podman: Debian 13 ships Podman 5",
        ),
        (DEBIAN_12, False, "Debian 12", "bookworm-backports has no Podman"),
        (
            'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=42\n',
            False,
            "Fedora Linux",
            "install Podman 4.4 or newer",
        ),
        ("", False, "this distribution", "install Podman 4.4 or newer"),
    ],
)
def test_the_podman_fix_for_each_distribution(
    spark: Spark, os_release: str, dgx: bool, name: str, fix: str
) -> None:
    spark.files["/etc/os-release"] = os_release
    if not dgx:
        del spark.files["/etc/dgx-release"]
    spark.commands["podman --version"] = None
    assert distro(spark.host()).name == name
    missing = spark.check(doctor.check_podman)
    assert missing.status == "fail" and missing.fix is not None and fix in missing.fix, missing.fix


def test_podman_5_has_notify_healthy_and_a_mismatched_quadlet_warns(spark: Spark) -> None:
    spark.commands["podman --version"] = Result(0, "podman version 5.4.2\n")
    assert spark.check(doctor.check_notify_healthy) == Check(
        "Notify=healthy", "pass", "available (Podman 5.4.2)"
    )
    warned = spark.check(doctor.check_quadlet)
    assert warned.status == "warn" and "Quadlet 4.9.3 does not match Podman 5.4.2" in warned.detail
    spark.commands["podman --version"] = Result(0, "podman version 4.6.2\n")
    assert spark.check(doctor.check_podman).status == "warn"
    spark.commands["podman --version"] = None
    assert_fails(spark.check(doctor.check_podman), detail="not installed", fix="sudo apt install podman")
    spark.commands["podman --version"] = Result(0, "podman version 4.9.3\n")
    del spark.files["/usr/libexec/podman/quadlet"]  # a Podman with Quadlet, but its generator gone
    assert_fails(
        spark.check(doctor.check_quadlet), detail="not installed", fix="sudo apt install --reinstall podman"
    )


def test_no_api_key(spark: Spark) -> None:
    spark.keys.unlink()
    assert_fails(spark.check(doctor.check_api_key), detail="no key file", fix="sudo sparkctl keys add NAME")
    spark.keys.write_text('{"version": 1, "keys": []}\n')
    assert_fails(spark.check(doctor.check_api_key), detail="holds no key", fix="sudo sparkctl keys add NAME")
    spark.keys.write_text("garbage")
    assert spark.check(doctor.check_api_key).status == "fail"
    spark.settings_data["gateway"] = {"auth": "none"}
    assert spark.check(doctor.check_api_key).status == "pass"


def test_a_full_disk_and_a_small_one(spark: Spark) -> None:
    spark.free = 2 * GIB
    assert_fails(spark.check(doctor.check_disk), detail="2 GiB free of 1000 GiB", fix="runtime.hf_cache")
    spark.free = 50 * GIB
    assert spark.check(doctor.check_disk).status == "warn"


def test_cgroup_v1(spark: Spark) -> None:
    spark.files["/proc/self/mounts"] = (
        "tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw 0 0\n"
    )
    assert_fails(
        spark.check(doctor.check_cgroup2),
        detail="/sys/fs/cgroup is tmpfs",
        fix="systemd.unified_cgroup_hierarchy=1",
    )


def test_the_port_taken_by_another_program(spark: Spark) -> None:
    spark.commands["systemctl show sparkctl.socket --property=ActiveState,Listen"] = Result(
        0, "ActiveState=inactive\n"
    )
    spark.commands["ss -Hltnp sport = :8009"] = Result(
        0, 'LISTEN 0 511 127.0.0.1:8009 0.0.0.0:* users:(("nginx",pid=4242,fd=6))\n'
    )
    assert_fails(
        spark.check(doctor.check_port),
        detail="127.0.0.1:8009 is taken by nginx (pid 4242)",
        fix="gateway.listen",
    )
    spark.port_free = True
    assert spark.check(doctor.check_port) == Check("gateway port", "pass", "127.0.0.1:8009 free")


def test_the_port_held_by_a_running_demo_is_no_failure(spark: Spark, tmp_path: Path) -> None:
    spark.commands["systemctl show sparkctl.socket --property=ActiveState,Listen"] = Result(
        0, "ActiveState=inactive\n"
    )
    spark.commands["ss -Hltnp sport = :8009"] = Result(
        0, 'LISTEN 0 4096 127.0.0.1:8009 0.0.0.0:* users:(("systemd",pid=777,fd=40))\n'
    )
    box = tmp_path / "box"
    spark.demo = Demo(1, 1, "127.0.0.1:8009", box / "demo/sparkctl.toml", box, Path("/venv/bin/sparkctl"))
    held = spark.check(doctor.check_port)
    assert held.status == "warn", held
    assert held.detail == (
        "127.0.0.1:8009 is held by the running sparkctl demo (http://127.0.0.1:8009): "
        "free again once the demo ends"
    )
    assert held.fix is not None and "stop the demo (Ctrl-C where it runs)" in held.fix
    # a demo on another port does not explain who holds this one
    spark.demo = Demo(1, 1, "127.0.0.1:28961", box / "demo/sparkctl.toml", box, Path("/venv/bin/sparkctl"))
    assert_fails(spark.check(doctor.check_port), detail="taken by systemd (pid 777)", fix="gateway.listen")


def test_in_a_demos_sandbox_only_what_applies_is_checked(spark: Spark) -> None:
    """What `sparkctl doctor` runs inside a demo: no driver, swap or weights disk (emulated
    engines), a first line naming the demo, and the demo's port held by its own socket unit."""
    del spark.files["/etc/dgx-release"]
    spark.commands["nvidia-smi --query-gpu=name,driver_version --format=csv,noheader"] = None
    spark.files["/proc/meminfo"] = "MemTotal: 16000000 kB\nMemAvailable: 15000000 kB\nSwapTotal: 0 kB\n"
    spark.free = 2 * GIB
    results = run_checks(spark.settings(), spark.host(), demo="http://127.0.0.1:8009")
    assert results[0].name == "demo" and results[0].status == "pass"
    assert results[0].detail.startswith("the running sparkctl demo at http://127.0.0.1:8009: its sandbox")
    names = [c.name for c in results]
    assert not {"NVIDIA driver", "unified memory", "swap", "HF cache disk"} & set(names)
    assert [c for c in results if c.status == "fail"] == []
    assert {c.name: c for c in results}["gateway port"].detail == "127.0.0.1:8009 held by sparkctl.socket"
    # the same host, outside a demo, fails on the missing driver and the full disk
    outside = {c.name: c.status for c in run_checks(spark.settings(), spark.host())}
    assert outside["NVIDIA driver"] == "fail" and outside["HF cache disk"] == "fail"
    assert outside["unified memory"] == "warn" and outside["swap"] == "warn"


def test_systemd_too_old_or_not_running(spark: Spark) -> None:
    spark.commands["systemctl --version"] = Result(0, "systemd 245 (245.4-4ubuntu3)\n")
    assert_fails(
        spark.check(doctor.check_systemd), detail="systemd 245 is older than 248", fix="Ubuntu 24.04"
    )
    spark.commands["systemctl --version"] = Result(0, "systemd 255\n")
    del spark.files["/run/systemd/system/.exists"]
    assert_fails(
        spark.check(doctor.check_systemd), detail="not running this system", fix="booted with systemd"
    )


def test_the_driver(spark: Spark) -> None:
    query = "nvidia-smi --query-gpu=name,driver_version --format=csv,noheader"
    spark.commands[query] = None
    assert_fails(spark.check(doctor.check_driver), detail="nvidia-smi is not installed", fix="ubuntu-drivers")
    spark.commands[query] = Result(
        9, "", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    )
    assert_fails(spark.check(doctor.check_driver), detail="couldn't communicate", fix="reboot")
    spark.commands[query] = Result(0, "NVIDIA GB10, 575.51.03\n")
    old = spark.check(doctor.check_driver)
    assert old.status == "warn" and "needs driver 580+" in old.detail


def test_memory_and_swap(spark: Spark) -> None:
    spark.files["/proc/meminfo"] = "MemTotal: 16000000 kB\nMemAvailable: 15000000 kB\nSwapTotal: 0 kB\n"
    assert spark.check(doctor.check_memory).status == "warn"
    swap = spark.check(doctor.check_swap)
    assert swap.status == "warn" and swap.fix is not None and "mkswap" in swap.fix
    spark.files["/proc/meminfo"] = "MemTotal: 127598944 kB\nMemAvailable: 20000000 kB\n"
    low = spark.check(doctor.check_memory)
    assert low.status == "warn" and low.fix is not None and "sparkctl ps" in low.fix


def test_polkit(spark: Spark) -> None:
    assert spark.check(doctor.check_polkit).status == "pass"
    write_model(spark.tmp / "models", "added-since")  # a model the installed rule does not name
    lacking = spark.check(doctor.check_polkit)
    assert lacking.status == "warn" and lacking.fix == "sudo sparkctl render", lacking
    (spark.tmp / "models" / "added-since.toml").unlink()
    spark.files["/etc/polkit-1/rules.d/50-sparkctl.rules"] += "// edited\n"
    assert spark.check(doctor.check_polkit).status == "warn"
    del spark.files["/etc/polkit-1/rules.d/50-sparkctl.rules"]
    assert_fails(
        spark.check(doctor.check_polkit), detail="50-sparkctl.rules is missing", fix="sudo sparkctl install"
    )
    del spark.files["/usr/lib/polkit-1/polkitd"]
    assert_fails(
        spark.check(doctor.check_polkit), detail="polkitd is not installed", fix="apt install polkitd"
    )
    spark.settings_data["systemd"] = {"bus": "user"}
    assert spark.check(doctor.check_polkit).status == "pass"


def test_the_socket_unit(spark: Spark) -> None:
    spark.commands["systemctl is-active sparkctl.socket"] = Result(3, "inactive\n")
    stopped = spark.check(doctor.check_socket_unit)
    assert stopped.status == "warn" and stopped.fix == "sudo systemctl start sparkctl.socket"
    spark.commands["systemctl is-enabled sparkctl.socket"] = Result(1, "disabled\n")
    assert_fails(
        spark.check(doctor.check_socket_unit), detail="not enabled (disabled)", fix="sudo sparkctl install"
    )


def test_models_without_weights_or_image(spark: Spark) -> None:
    spark.commands["podman image exists localhost/sparkctl-emulator:latest"] = Result(1, "")
    models = spark.check(doctor.check_models)
    assert (
        models.status == "warn"
        and models.detail.startswith("0 of 1")
        and "sparkctl pull ID" in (models.fix or "")
    )


def test_footprints_well_above_the_declared_share_and_weights_that_never_fit_are_warnings(
    spark: Spark,
) -> None:
    assert spark.check(doctor.check_footprints) == Check(
        "model footprints", "pass", "0 of 1 enabled models measured, each within its declared share"
    )
    total = 127598944 * 1024
    state = spark.root / "var/lib/sparkctl/state"
    state.mkdir(parents=True)
    learned = {"version": 2, "models": {"ready-model": {"loads": [30.0], "memory_bytes": int(0.3 * total)}}}
    (state / "learned.json").write_text(json.dumps(learned))
    assert spark.check(doctor.check_footprints).status == "pass"  # 0.3 = its declared share
    learned["models"]["ready-model"]["memory_bytes"] = int(0.5 * total)  # type: ignore[index]
    (state / "learned.json").write_text(json.dumps(learned))
    above = spark.check(doctor.check_footprints)
    assert above.status == "warn" and "ready-model takes 60.8 GiB, declares 36.5 GiB" in above.detail
    assert "gpu_memory_utilization" in (above.fix or "")
    snapshot = spark.root / "var/lib/sparkctl/huggingface/hub/models--org--ready/snapshots" / ("c" * 40)
    with (snapshot / "model.safetensors").open("wb") as f:
        f.truncate(total)  # sparse: weights the size of the whole memory
    never = spark.check(doctor.check_footprints)
    assert never.status == "warn" and "can never fit" in never.detail and "121.7 GiB" in never.detail
    (state / "learned.json").write_text("{garbled")
    broken = spark.check(doctor.check_footprints)
    assert broken.status == "warn" and "not JSON" in broken.detail
    assert (state / "learned.json").exists()  # read, not set aside: that is the daemon's to do


def test_a_cluster_s_peers(spark: Spark) -> None:
    assert spark.check(doctor.check_peers).detail == "no peers configured: this Spark serves alone"
    key = spark.tmp / "peer-b.key"
    key.write_text("sk-spark-peer\n")
    spark.settings_data["cluster"] = {
        "node": "spark-a",
        "peers": [{"name": "spark-b", "url": "http://192.168.100.2:8009", "api_key_file": str(key)}],
    }
    answers: dict[str, tuple[int, bytes] | None] = {}
    asked: list[tuple[str, dict[str, str]]] = []

    def fetch(url: str, headers: Mapping[str, str]) -> tuple[int, bytes] | None:
        asked.append((url, dict(headers)))
        return answers.get(url)

    def check() -> Check:
        host = spark.host()
        host.fetch = fetch
        return doctor.check_peers(host, spark.settings())

    status = "http://192.168.100.2:8009/api/v1/status"
    answers[status] = (200, json.dumps({"version": __version__, "node": "spark-b"}).encode())
    ok = check()
    assert ok.status == "pass" and "peers answering: spark-b" in ok.detail, ok
    assert asked[-1] == (status, {"Authorization": "Bearer sk-spark-peer"})  # the peer's own key
    answers[status] = (200, json.dumps({"version": "0.0.1", "node": "spark-b"}).encode())
    assert "runs sparkctl 0.0.1" in check().detail
    answers[status] = (401, b"{}")
    assert "refuses the key" in check().detail
    answers[status] = None
    down = check()
    assert down.status == "warn" and "spark-b at http://192.168.100.2:8009 does not answer" in down.detail
    answers[status] = (200, json.dumps({"version": __version__, "node": "spark-c"}).encode())
    assert "calls itself 'spark-c'" in check().detail
    key.unlink()  # this node cannot read the key it holds for the peer: nothing is asked
    before = len(asked)
    assert f"spark-b: cannot read the key file {key} (sudo sparkctl doctor)" in check().detail
    assert len(asked) == before


def test_what_a_spanning_model_needs_on_every_node_it_spans(spark: Spark) -> None:
    assert spark.check(doctor.check_spanning).detail == "no peers configured: no model spans Sparks here"
    key = spark.tmp / "peer-b.key"
    key.write_text("sk-spark-peer\n")
    spark.settings_data["cluster"] = {
        "node": "spark-a",
        "interface": "qsfp0",
        "address": "192.168.100.1",
        "peers": [{"name": "spark-b", "url": "http://192.168.100.2:8009", "api_key_file": str(key)}],
    }
    assert spark.check(doctor.check_spanning).detail == "no enabled model spans this node and others"
    write_model(
        spark.tmp / "models",
        "big",
        serve={"nodes": 2, "gpu": "exclusive", "owner": "spark-a"},
        engine={"image": "vllm/vllm-openai:v0.11.0", "command": ["vllm", "serve"]},
    )
    settings = spark.settings()
    mine = span.fingerprint(load_catalog(settings).models["big"].spec)
    preflight = "http://192.168.100.2:8009/api/v1/models/big/preflight"
    answers: dict[str, tuple[int, bytes] | None] = {}
    asked: list[tuple[str, dict[str, str]]] = []

    def fetch(url: str, headers: Mapping[str, str]) -> tuple[int, bytes] | None:
        asked.append((url, dict(headers)))
        return answers.get(url)

    def check() -> Check:
        host = spark.host()
        host.fetch = fetch
        return doctor.check_spanning(host, settings)

    def answer(missing: list[str], fingerprint: str | None = mine) -> None:
        body = {"node": "spark-b", "model": "big", "ready": not missing, "missing": missing}
        answers[preflight] = (200, json.dumps({**body, "catalog_sha256": fingerprint}).encode())

    answer([])
    ok = check()
    assert ok.status == "pass" and ok.detail.endswith("the same entry: big (spark-a, spark-b)"), ok
    assert asked[-1] == (preflight, {"Authorization": "Bearer sk-spark-peer"})
    answer(["weights for org/model@main are not in /c: run sparkctl pull big"])
    lacking = check()
    assert lacking.status == "warn" and lacking.detail == (
        "big on spark-b: weights for org/model@main are not in /c: run sparkctl pull big"
    )
    answer([], "0" * 64)
    assert check().detail == "big on spark-b: its catalog entry differs from this node's"
    answers[preflight] = (404, b"{}")
    assert check().detail == "big on spark-b: not in its catalog"
    answers[preflight] = None
    assert check().detail == "big on spark-b: does not answer"
    key.unlink()
    assert check().detail == f"big on spark-b: cannot read the key file {key} (sudo sparkctl doctor)"


def test_a_cluster_node_s_cache_is_the_daemon_s_to_pull_into(
    spark: Spark, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert spark.check(doctor.check_cluster_pulls).detail == "no peers configured: only this node pulls here"
    spark.settings_data["cluster"] = {
        "node": "spark-a",
        "peers": [{"name": "spark-b", "url": "http://192.168.100.2:8009", "api_key_file": "/k"}],
    }
    cache = spark.root / "var/lib/sparkctl/huggingface"
    groups = {cache.stat().st_gid: "root"}
    monkeypatch.setattr("sparkctl.tools.doctor.peers._group_name", lambda gid: groups.get(gid, str(gid)))
    cache.chmod(0o755)
    before = spark.check(doctor.check_cluster_pulls)
    assert before.status == "warn" and "is root's, mode 0755: the daemon (group sparkctl)" in before.detail
    assert before.fix is not None and before.fix.startswith("sudo sparkctl install")
    groups[cache.stat().st_gid] = "sparkctl"  # what install does: the daemon's group, setgid, g+w
    cache.chmod(0o2775)
    after = spark.check(doctor.check_cluster_pulls)
    assert after.status == "pass", after
    token = spark.root / "etc/sparkctl/hf-token"
    token.write_text("hf_x")
    token.chmod(0o600)
    unreadable = spark.check(doctor.check_cluster_pulls)
    assert unreadable.status == "warn" and "cannot read /etc/sparkctl/hf-token" in unreadable.detail
    token.chmod(0o640)
    assert spark.check(doctor.check_cluster_pulls).status == "pass"


def test_a_broken_check_is_reported_and_the_others_still_run(
    spark: Spark, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(host: Host, settings: Settings) -> Check:
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "CHECKS", (explode, doctor.check_swap))
    results = run_checks(spark.settings(), spark.host())
    assert results[0] == Check("explode", "fail", "the check itself failed: RuntimeError: boom", None)
    assert results[1].name == "swap"


def test_doctor_command_on_this_host(tmp_path: Path) -> None:
    """The real checks on the machine running the tests: the JSON shape, and exit 1 on a failure."""
    config = tmp_path / "sparkctl.toml"
    config.write_text(
        f'[gateway]\napi_keys_file = "{tmp_path / "none"}"\n[runtime]\nhf_cache = "{tmp_path / "hf"}"\n'
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor", "--json"])
    checks = json.loads(result.stdout)
    assert [c["check"] for c in checks] == [
        "systemd",
        "cgroup v2",
        "Podman",
        "Quadlet",
        "Notify=healthy",
        "Podman API",
        "NVIDIA CDI spec",
        "NVIDIA driver",
        "unified memory",
        "swap",
        "HF cache disk",
        "gateway port",
        "API key",
        "polkit rule",
        "sparkctl.socket",
        "models",
        "model footprints",
        "cluster link",
        "cluster peers",
        "cluster pulls",
        "spanning models",
    ]
    for c in checks:
        assert set(c) == {"check", "status", "detail", "fix"} and c["status"] in ("pass", "warn", "fail")
        assert c["fix"] is None or c["status"] != "pass"
    by_name = {c["check"]: c for c in checks}
    assert by_name["API key"]["status"] == "fail"  # the key file named above does not exist
    assert result.exit_code == 1
    assert result.stderr.rstrip().endswith("passed")

    text = CliRunner().invoke(cli, ["--config", str(config), "doctor"])
    assert text.exit_code == 1
    assert (
        "FAIL  API key" in text.stdout and "fix: sudo sparkctl install (creates an admin key)" in text.stdout
    )
