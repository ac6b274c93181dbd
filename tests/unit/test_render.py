"""The renderer: deterministic output, conflicts, flags, quoting, and the examples in quadlets/."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from sparkctl.catalog import load_catalog
from sparkctl.settings import Settings, load_settings
from sparkctl.units import quoting as unitfile
from sparkctl.units.own import polkit_rule
from sparkctl.units.render import conflicting_pairs, render
from sparkctl.units.sync import sync
from tests.helpers import write_model

ROOT = Path(__file__).resolve().parents[2]


def rendered(tmp_path: Path, settings: Settings | None = None) -> dict[str, str]:
    settings = settings or Settings()
    return {f.name: f.text for f in render(load_catalog(settings, [tmp_path]), settings)}


def line(text: str, key: str) -> str:
    (found,) = [ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith(key + "=")]
    return found


def test_quadlets_dir_is_the_rendering_of_models() -> None:
    """quadlets/ must be what `sparkctl --config quadlets/sparkctl.toml render --out quadlets` writes."""
    settings = load_settings(ROOT / "quadlets" / "sparkctl.toml")
    files = {f.name: f.text for f in render(load_catalog(settings), settings)}
    on_disk = {
        p.name: p.read_text() for p in (ROOT / "quadlets").glob("sparkctl[-.]*") if p.suffix != ".toml"
    }
    assert sorted(on_disk) == sorted(files), (
        "run: sparkctl --config quadlets/sparkctl.toml render --out quadlets"
    )
    for name, text in files.items():
        assert on_disk[name] == text, f"{name} drifted from models/; re-render quadlets/"


def test_every_enabled_shipped_model_renders_a_unit_and_a_socket() -> None:
    settings = load_settings(ROOT / "quadlets" / "sparkctl.toml")
    catalog = load_catalog(settings)
    names = {f.name for f in render(catalog, settings)}
    for model in catalog.enabled:
        assert f"sparkctl-{model.id}.container" in names and f"sparkctl-{model.id}.socket" in names
    for model in catalog:
        if not model.spec.enabled:
            assert not any(model.id in n for n in names)


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    for name in ("b", "a", "c"):
        write_model(tmp_path, name, engine={"env": {"Z": "1", "A": "2"}})
    assert rendered(tmp_path) == rendered(tmp_path)


def test_conflicts_cover_exclusive_and_over_budget_pairs_with_one_ordering(tmp_path: Path) -> None:
    write_model(tmp_path, "big1", engine={"gpu_memory_utilization": 0.8})
    write_model(tmp_path, "big2", engine={"gpu_memory_utilization": 0.7})
    write_model(tmp_path, "small", engine={"gpu_memory_utilization": 0.05}, serve={"pinned": True})
    write_model(tmp_path, "solo", engine={"gpu_memory_utilization": 0.1}, serve={"gpu": "exclusive"})
    settings = Settings()
    assert conflicting_pairs(load_catalog(settings, [tmp_path]), settings) == [
        ("big1", "big2"),
        ("big1", "solo"),
        ("big2", "solo"),
        ("small", "solo"),
    ]
    files = rendered(tmp_path)
    big1 = files["sparkctl-big1.container"]
    assert "Conflicts=sparkctl-big2.service" in big1 and "Before=sparkctl-big2.service" in big1
    big2 = files["sparkctl-big2.container"]
    assert "Conflicts=sparkctl-big1.service" in big2 and "Before=sparkctl-big1.service" not in big2
    assert "Conflicts=sparkctl-small.service" not in big1  # 0.8 + 0.05 fits 0.94


def test_vllm_container_on_bridge_network(tmp_path: Path) -> None:
    write_model(
        tmp_path,
        "m",
        source={"hf_repo": "org/m", "revision": "abc123"},
        engine={
            "command": ["vllm", "serve"],
            "port": 8001,
            "host_port": 18555,
            "enable_prefix_caching": False,
            "enforce_eager": True,
            "trust_remote_code": False,
            "json_args": {"speculative-config": {"method": "mtp", "n": 2}},
            "args": ["--disable-log-stats"],
            "entrypoint": ["/wrap.sh"],
            "shm_size": "4g",
            "devices": ["/dev/infiniband"],
            "volumes": [
                {"source": "/srv/media", "target": "/media"},
                {"source": "/srv/out", "target": "/out", "read_only": False},
            ],
        },
        serve={"start_timeout": "15m", "stop_timeout": "2500ms", "preload": True},
    )
    text = rendered(tmp_path)["sparkctl-m.container"]
    assert shlex.split(line(text, "Exec")) == [
        "vllm",
        "serve",
        "org/m",
        "--revision",
        "abc123",
        "--served-model-name",
        "m",
        "--host",
        "0.0.0.0",
        "--port",
        "8001",
        "--max-model-len",
        "4096",
        "--gpu-memory-utilization",
        "0.3",
        "--enforce-eager",
        "--no-enable-prefix-caching",
        "--speculative-config",
        '{"method":"mtp","n":2}',
        "--disable-log-stats",
    ]
    assert "PublishPort=127.0.0.1:18555:8001" in text and "Network=host" not in text
    assert "PodmanArgs=--shm-size=4g" in text
    assert 'PodmanArgs="--entrypoint=[\\"/wrap.sh\\"]"' in text
    assert "AddDevice=nvidia.com/gpu=all" in text and "AddDevice=/dev/infiniband" in text
    assert "Volume=/srv/media:/media:ro" in text and "Volume=/srv/out:/out\n" in text
    assert "TimeoutStartSec=900s" in text and "HealthStartPeriod=900s" in text
    # podman kills an engine not gone 3 s (2.5 s, in whole seconds, never shorter) after SIGTERM;
    # the unit allows that and the container's removal
    assert "PodmanArgs=--stop-timeout=3" in text and line(text, "TimeoutStopSec") == "33s"
    assert line(text, "ExecStartPost") == (
        "/usr/local/bin/sparkctl probe --interval 10ms http://127.0.0.1:18555/health"
    )
    assert "Pull=never" in text and text.rstrip().endswith("WantedBy=multi-user.target")


def test_host_network_listens_on_the_host_port(tmp_path: Path) -> None:
    write_model(tmp_path, "m", engine={"host_port": 18555})
    settings = Settings.model_validate({"runtime": {"container_network": "host"}})
    text = rendered(tmp_path, settings)["sparkctl-m.container"]
    assert "Network=host" in text and "PublishPort" not in text
    assert "--host 127.0.0.1 --port 18555" in line(text, "Exec")


def test_sglang_flags(tmp_path: Path) -> None:
    write_model(
        tmp_path,
        "m",
        engine={
            "kind": "sglang",
            "tensor_parallel_size": 1,
            "enforce_eager": True,
            "enable_prefix_caching": False,
            "attention_backend": "triton",
        },
    )
    argv = shlex.split(line(rendered(tmp_path)["sparkctl-m.container"], "Exec"))
    assert argv[:2] == ["--model-path", "org/model"]
    for pair in (
        ["--context-length", "4096"],
        ["--mem-fraction-static", "0.3"],
        ["--tp-size", "1"],
        ["--attention-backend", "triton"],
    ):
        assert any(argv[i : i + 2] == pair for i in range(len(argv)))
    assert "--disable-cuda-graph" in argv and "--disable-radix-cache" in argv


def test_process_unit(tmp_path: Path) -> None:
    write_model(
        tmp_path,
        "p",
        engine={
            "runtime": "process",
            "image": None,
            "port": 28001,
            "command": ["/opt/venv/bin/vllm", "serve"],
            "ulimits": {"memlock": -1},
        },
    )
    text = rendered(tmp_path)["sparkctl-p.service"]
    assert line(text, "Type") == "exec"
    assert line(text, "ExecStart").startswith(
        "/opt/venv/bin/vllm serve org/model --served-model-name p --host 127.0.0.1 --port 28001"
    )
    assert "LimitMEMLOCK=infinity" in text and "Environment=HF_HOME=/var/lib/sparkctl/huggingface" in text
    assert line(text, "TimeoutStopSec") == "10s"  # serve.stop_timeout's default: then killed


def test_socket_unit(tmp_path: Path) -> None:
    write_model(tmp_path, "m.v1", serve={"direct_port": 18999})
    text = rendered(tmp_path)["sparkctl-m.v1.socket"]
    assert "ListenStream=127.0.0.1:18999" in text
    assert "Service=sparkctl.service" in text and "FileDescriptorName=m.v1" in text


def test_disabled_models_render_nothing(tmp_path: Path) -> None:
    write_model(tmp_path, "off", status="disabled", disabled_reason="broken")
    assert rendered(tmp_path) == {}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("plain", "plain"),
        ("a b", '"a b"'),
        ("100%", "100%%"),
        ("$HOME", "$$HOME"),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("a;b", '"a;b"'),
        ("it's", '"it\'s"'),
        ("", '""'),
    ],
)
def test_quote_word(word: str, expected: str) -> None:
    assert unitfile.quote_word(word) == expected


def test_environment_quoting() -> None:
    assert unitfile.environment("A", "x y $Z 5%") == '"A=x y $Z 5%%"'
    assert unitfile.quadlet_environment("A", "x y $Z 5%") == '"A=x y $$Z 5%%"'
    assert unitfile.environment("A", "") == "A="


def test_sync_writes_changes_and_removes_only_its_own_stale_files(tmp_path: Path) -> None:
    cat, out = tmp_path / "cat", tmp_path / "out"
    write_model(cat, "a")
    write_model(cat, "b")
    settings = Settings()
    files = render(load_catalog(settings, [cat]), settings)
    dirs = {"quadlet": out, "unit": out}
    first = sync(files, dirs)
    assert len(first.added) == 5 and not first.changed  # 2 models × 2, and the network
    (out / "sparkctl-hand-written.service").write_text("[Service]\nExecStart=/bin/true\n")
    assert not sync(files, dirs).any
    (cat / "b.toml").unlink()
    third = sync(render(load_catalog(settings, [cat]), settings), dirs)
    assert sorted(p.name for p in third.removed) == ["sparkctl-b.container", "sparkctl-b.socket"]
    assert (out / "sparkctl-hand-written.service").exists()


def test_units_dir_holds_the_default_rendering_of_sparkctls_own_units() -> None:
    """units/sparkctl.{service,socket} are what `sparkctl install` writes with the defaults."""
    from sparkctl.settings import DEFAULT_CONFIG
    from sparkctl.units.own import own_units

    for unit in own_units(Settings(), Path("/usr/local/bin/sparkctl"), DEFAULT_CONFIG):
        assert (ROOT / "units" / unit.name).read_text() == unit.text, f"re-render units/{unit.name}"
    rule = polkit_rule(load_catalog(Settings()))
    assert (ROOT / "units" / "sparkctl.polkit.rules").read_text() == rule, "re-render the polkit rule"


def test_the_polkit_rule_names_exactly_the_enabled_models_services(tmp_path: Path) -> None:
    write_model(tmp_path, "a")
    write_model(tmp_path, "b-1.5", status="disabled", disabled_reason="broken")
    rule = polkit_rule(load_catalog(Settings(), [tmp_path]))
    assert '"sparkctl-a.service": true' in rule and "b-1.5" not in rule
    assert "sparkctl-*" not in rule and "RegExp" not in rule and ".test(" not in rule  # no pattern
    assert '(verb == "start" || verb == "stop")' in rule and "restart" not in rule


def test_a_value_ending_in_a_backslash_is_never_written() -> None:
    """systemd continues a line that ends in a backslash with the next one: after Description=
    that would be Conflicts=, the backstop of one GPU tenant (#13)."""
    with pytest.raises(ValueError, match="cannot end with a backslash"):
        unitfile.plain("sparkctl model x: ends in \\")
    assert unitfile.plain("a \\ inside") == "a \\ inside"
