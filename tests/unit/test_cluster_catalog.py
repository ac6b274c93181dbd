"""`serve.nodes` and `serve.multinode` (BRIEF §9): a model that spans Sparks, as `models validate`
checks it against the configured cluster."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sparkctl.cli import cli
from tests.helpers import write_model

PEER = '[[cluster.peers]]\nname = "spark-b"\nurl = "http://10.77.0.2:29201"\napi_key_file = "/k"\n'
DISABLED = {"status": "disabled", "disabled_reason": "waits for spanning models"}


def _validate(tmp_path: Path, cluster: str) -> tuple[int, list[str]]:
    config = tmp_path / "sparkctl.toml"
    config.write_text(f'[catalog]\ndirs = ["{tmp_path / "models"}"]\n{cluster}')
    result = CliRunner().invoke(cli, ["--config", str(config), "models", "validate"])
    return result.exit_code, (result.stdout + result.stderr).splitlines()


def test_a_spanning_model_fits_a_cluster_of_enough_nodes_with_its_link(tmp_path: Path) -> None:
    write_model(tmp_path / "models", "big", serve={"nodes": 2, "multinode": "native"}, **DISABLED)
    write_model(tmp_path / "models", "small")
    code, lines = _validate(tmp_path, f'[cluster]\nnode = "spark-a"\ninterface = "enp1s0f1np1"\n{PEER}')
    assert code == 0 and lines == ["2 models valid (1 enabled, 1 disabled)"], lines


def test_a_spanning_model_without_the_cluster_it_needs_is_named(tmp_path: Path) -> None:
    path = write_model(tmp_path / "models", "big", serve={"nodes": 3}, **DISABLED)
    code, lines = _validate(tmp_path, f'[cluster]\nnode = "spark-a"\n{PEER}')
    assert code == 1
    assert lines[:2] == [
        f"{path}: serve.nodes: spans 3 nodes, but the cluster has 2 (spark-a, spark-b): add its peers "
        "to [cluster] peers (docs/cluster.md)",
        f"{path}: serve.nodes: a model that spans nodes needs cluster.interface: the NIC of the "
        "Sparks' direct link, which NCCL, Gloo, UCX and Ray are told to use",
    ]
    assert lines[2] == "error: 2 errors in the catalog"


def test_an_enabled_spanning_model_is_refused_until_spanning_models_start(tmp_path: Path) -> None:
    path = write_model(tmp_path / "models", "big", serve={"nodes": 2})
    code, lines = _validate(tmp_path, f'[cluster]\nnode = "spark-a"\ninterface = "qsfp0"\n{PEER}')
    assert code == 1 and lines[0] == (
        f"{path}: serve.nodes: models that span nodes are validated but not started by this version "
        'yet (docs/cluster.md): keep it status = "disabled" until then'
    )


def test_nodes_and_multinode_are_typed(tmp_path: Path) -> None:
    path = write_model(tmp_path / "models", "big", serve={"nodes": 0, "multinode": "mpi"}, **DISABLED)
    code, lines = _validate(tmp_path, "")
    assert code == 1
    assert lines[:2] == [
        f"{path}: serve.nodes: must be >= 1, got 0",
        f"{path}: serve.multinode: must be one of ray, native, got 'mpi'",
    ]
