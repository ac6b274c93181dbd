"""Daemon configuration, quantities, the catalog schema in docs/, and the catalog CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparkctl.catalog.spec import json_schema
from sparkctl.cli import cli
from sparkctl.errors import ConfigError
from sparkctl.quantities import format_duration, parse_duration, parse_idle, parse_size
from sparkctl.settings import Settings, load_settings
from tests.helpers import write_model

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_the_brief() -> None:
    s = Settings()
    assert s.gateway.listen == ["127.0.0.1:8009"] and s.gateway.auth == "required"
    assert s.gateway.api_keys_file == Path("/etc/sparkctl/api-keys") and s.gateway.max_body == 64 * 1024**2
    assert s.gateway.queue_limit == 256 and s.gateway.cors_origins == []
    assert s.catalog.dirs[1] == Path("/etc/sparkctl/models") and s.catalog.dirs[0].name == "models"
    assert (s.catalog.port_base, s.catalog.direct_port_base) == (18100, 18300)
    assert s.systemd.bus == "system" and s.systemd.quadlet_dir == Path("/etc/containers/systemd")
    assert s.systemd.unit_dir == Path("/etc/systemd/system")
    assert s.scheduler.memory_budget == 0.94 and s.scheduler.idle_timeout == 1200
    assert s.scheduler.drain_timeout == 600 and s.scheduler.memory_wait == 60
    assert (
        s.runtime.hf_cache == Path("/var/lib/sparkctl/huggingface")
        and s.runtime.container_network == "bridge"
    )


def test_config_file_errors_name_file_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "sparkctl.toml"
    cfg.write_text('[gateway]\nauth = "none"\nlisten = ["0.0.0.0:8009"]\n[scheduler]\nmemory_budgt = 0.9\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    lines = [str(i) for i in exc.value.issues]
    assert lines[0].startswith(
        f'{cfg}: gateway: auth = "none" is refused unless every listener is loopback; '
        "not loopback: 0.0.0.0:8009"
    )
    assert lines[1].startswith(f"{cfg}: scheduler.memory_budgt: unknown key (allowed: drain_timeout, ")


def test_config_from_env_and_relative_catalog_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[catalog]\ndirs = ["models"]\n[systemd]\nbus = "unix:path=/run/x"\n')
    monkeypatch.setenv("SPARKCTL_CONFIG", str(cfg))
    s = load_settings(None)
    assert s.catalog.dirs == [tmp_path / "models"] and s.systemd.bus == "unix:path=/run/x"


def test_quantities() -> None:
    assert parse_duration("250ms") == 0.25 and parse_duration("30m") == 1800 and parse_duration("1h") == 3600
    assert parse_idle("0") == 0 and parse_idle("never") == math.inf
    assert parse_size("16g") == 16 * 1024**3 and parse_size("64m") == 64 * 1024**2
    assert (
        format_duration(1800) == "30m"
        and format_duration(0.25) == "250ms"
        and format_duration(math.inf) == "never"
    )
    for bad in ("", "10", "1d", "-1s", "1.s", "s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_docs_schema_is_current() -> None:
    on_disk = json.loads((ROOT / "docs" / "catalog.schema.json").read_text())
    assert on_disk == json_schema(), "run: sparkctl models schema > docs/catalog.schema.json"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_models_validate_ok_and_broken(tmp_path: Path) -> None:
    write_model(tmp_path, "a")
    code, out, _ = run("models", "validate", str(tmp_path))
    assert code == 0 and out.strip() == "1 models valid (1 enabled, 0 disabled)"
    write_model(tmp_path, "b", engine={"gpu_memory_utilization": 1.4})
    code, out, err = run("models", "validate", str(tmp_path))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"{tmp_path / 'b.toml'}: engine.gpu_memory_utilization: must be in (0, 1], got 1.4",
        "error: 1 error in the catalog",
    ]


def test_nothing_is_rendered_from_an_invalid_catalog(tmp_path: Path) -> None:
    cat, out = tmp_path / "cat", tmp_path / "out"
    write_model(cat, "a")
    write_model(cat, "b", status="bogus")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[catalog]\ndirs = ["{cat}"]\n')
    code, _, err = run("--config", str(cfg), "render", "--out", str(out))
    assert code == 1 and "status: must be one of" in err and not out.exists()


def test_models_list_json_and_show(tmp_path: Path) -> None:
    write_model(tmp_path / "cat", "a", capabilities=["chat", "tools"], aliases=["alpha"])
    write_model(tmp_path / "cat", "z", status="disabled", disabled_reason="it hangs")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[catalog]\ndirs = ["cat"]\n')
    code, out, _ = run("--config", str(cfg), "models", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["id"] for r in rows] == ["a", "z"]
    assert rows[0]["capabilities"] == ["chat", "tools"] and rows[0]["unit"] == "sparkctl-a.service"
    assert (
        rows[1]["status"] == "disabled"
        and rows[1]["disabled_reason"] == "it hangs"
        and rows[1]["unit"] is None
    )
    code, out, _ = run("--config", str(cfg), "models", "show", "alpha", "--json")
    assert code == 0 and json.loads(out)["id"] == "a"
    code, _, err = run("--config", str(cfg), "models", "show", "nope")
    assert code == 1 and err.strip() == "error: The model 'nope' does not exist."


def test_usage_errors_exit_2() -> None:
    assert run("models", "frobnicate")[0] == 2
    assert run("render", "--bogus")[0] == 2


def test_console_script_runs_and_reports_errors_on_stderr(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "sparkctl"
    proc = subprocess.run(
        [str(exe), "--config", str(tmp_path / "missing.toml"), "models", "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(
        f"error: invalid configuration: 1 error\n{tmp_path / 'missing.toml'}: cannot read"
    )
