"""`serve.nodes`, `serve.multinode` and `serve.owner` (BRIEF §9): a model that spans Sparks, as
its own file says it and as `models validate` checks it against the configured cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sparkctl.catalog import load_catalog, span
from sparkctl.cli import cli
from sparkctl.core.supervisor import model_info
from sparkctl.errors import CatalogError
from sparkctl.settings import Settings
from tests.helpers import write_model

PEER = '[[cluster.peers]]\nname = "spark-b"\nurl = "http://10.77.0.2:29201"\napi_key_file = "/k"\n'
LINK = 'interface = "enp1s0f1np1"\naddress = "10.77.0.1"\n'
CLUSTER = f'[cluster]\nnode = "spark-a"\n{LINK}{PEER}'
DISABLED = {"status": "disabled", "disabled_reason": "not for this cluster"}
SPAN = {"nodes": 2, "gpu": "exclusive", "owner": "spark-a"}
# The Ray form in a container starts Ray in place of the image's entrypoint: a command is said.
VLLM = {"command": ["vllm", "serve"]}


def _validate(tmp_path: Path, cluster: str) -> tuple[int, list[str]]:
    config = tmp_path / "sparkctl.toml"
    config.write_text(f'[catalog]\ndirs = ["{tmp_path / "models"}"]\n{cluster}')
    result = CliRunner().invoke(cli, ["--config", str(config), "models", "validate"])
    return result.exit_code, (result.stdout + result.stderr).splitlines()


def test_a_spanning_model_fits_a_cluster_of_enough_nodes_with_its_link(tmp_path: Path) -> None:
    write_model(tmp_path / "models", "big", serve={**SPAN, "multinode": "native"}, **DISABLED)
    write_model(tmp_path / "models", "small")
    code, lines = _validate(tmp_path, CLUSTER)
    assert code == 0 and lines == ["2 models valid (1 enabled, 1 disabled)"], lines


def test_a_disabled_spanning_model_is_not_held_to_this_cluster(tmp_path: Path) -> None:
    """The shipped catalog's example is written for anyone's cluster, one Spark's included."""
    write_model(tmp_path / "models", "big", serve={"nodes": 3, "gpu": "exclusive"}, engine=VLLM, **DISABLED)
    code, lines = _validate(tmp_path, "")
    assert code == 0, lines


def test_an_enabled_spanning_model_that_fits_the_cluster_is_valid(tmp_path: Path) -> None:
    write_model(tmp_path / "models", "big", serve=SPAN, engine=VLLM)
    code, lines = _validate(tmp_path, CLUSTER)
    assert code == 0, lines
    settings = Settings.model_validate(
        {
            "cluster": {
                "node": "spark-a",
                "interface": "qsfp0",
                "address": "10.77.0.1",
                "peers": [{"name": "spark-b", "url": "http://10.77.0.2:29201", "api_key_file": "/k"}],
            }
        }
    )
    assert load_catalog(settings, [tmp_path / "models"]).models["big"].spec.serve.nodes == 2


@pytest.mark.parametrize(
    ("serve", "cluster", "message"),
    [
        (
            {"nodes": 3},
            CLUSTER,
            "spans 3 nodes, but the cluster has 2 (spark-a, spark-b): add its peers to [cluster] peers "
            "(docs/cluster.md)",
        ),
        (
            {},
            f'[cluster]\nnode = "spark-a"\naddress = "10.77.0.1"\n{PEER}',
            "a model that spans nodes needs cluster.interface: the NIC of the Sparks' direct link, "
            "which NCCL, Gloo, UCX and Ray are told to use",
        ),
        (
            {},
            f'[cluster]\nnode = "spark-a"\ninterface = "qsfp0"\n{PEER}',
            "a model that spans nodes needs cluster.address: this node's IP address on the Sparks' "
            "direct link (VLLM_HOST_IP)",
        ),
        (
            {"owner": None},
            CLUSTER,
            "a model that spans nodes needs serve.owner: the node (cluster.node) that runs its head",
        ),
        (
            {"owner": "spark-z"},
            CLUSTER,
            "serve.owner 'spark-z' is neither this node (spark-a) nor one of its peers (spark-b)",
        ),
        (
            {},
            f'[cluster]\nnode = "spark-a"\n{LINK}{PEER.replace("10.77.0.2", "spark-b.lan")}',
            "peer 'spark-b' has no link address: set its address (cluster.peers) to its IP on the "
            "direct link, or give its url as that IP",
        ),
    ],
)
def test_what_the_cluster_lacks_for_an_enabled_spanning_model_is_named(
    tmp_path: Path, serve: dict[str, Any], cluster: str, message: str
) -> None:
    merged = {k: v for k, v in {**SPAN, **serve}.items() if v is not None}
    path = write_model(tmp_path / "models", "big", serve=merged, engine=VLLM)
    code, lines = _validate(tmp_path, cluster)
    assert code == 1 and lines[0] == f"{path}: serve.nodes: {message}", lines


def test_a_node_the_model_does_not_span_needs_no_link(tmp_path: Path) -> None:
    """A third Spark that a two-node model leaves out renders nothing for it, so it is not asked
    for its own link settings."""
    write_model(tmp_path / "models", "big", serve={**SPAN, "owner": "spark-b"}, engine=VLLM)
    settings = Settings.model_validate(
        {
            "cluster": {
                "node": "spark-c",
                "peers": [
                    {"name": "spark-b", "url": "http://10.77.0.2:29201", "api_key_file": "/k"},
                    {"name": "spark-a", "url": "http://10.77.0.1:29201", "api_key_file": "/k"},
                ],
            }
        }
    )
    catalog = load_catalog(settings, [tmp_path / "models"])
    # It runs no part there, so it never starts there: its requests go to its owner.
    assert span.owners([catalog.models["big"].spec], settings.cluster) == {"big": "spark-b"}
    assert model_info(catalog.models["big"], settings.cluster).worker
    settings = settings.model_copy(
        update={"cluster": settings.cluster.model_copy(update={"node": "spark-0"})}
    )
    with pytest.raises(CatalogError, match=r"needs cluster\.interface"):
        load_catalog(settings, [tmp_path / "models"])  # spark-0 sorts first: a worker


def test_nodes_and_multinode_are_typed(tmp_path: Path) -> None:
    path = write_model(tmp_path / "models", "big", serve={"nodes": 0, "multinode": "mpi"}, **DISABLED)
    code, lines = _validate(tmp_path, "")
    assert code == 1
    assert lines[:2] == [
        f"{path}: serve.nodes: must be >= 1, got 0",
        f"{path}: serve.multinode: must be one of ray, native, got 'mpi'",
    ]


@pytest.mark.parametrize(
    ("over", "field", "message"),
    [
        ({"serve": {"gpu": "shared"}}, "serve.gpu", 'the only tenant of each: use gpu = "exclusive"'),
        ({"serve": {"nodes": 1}}, "serve.owner", "only for a model that spans nodes"),
        ({"engine": {"kind": "sglang"}}, "serve.nodes", 'multi-node executors: kind "vllm"'),
        (
            {"engine": {"tensor_parallel_size": 2, "pipeline_parallel_size": 2}},
            "engine.tensor_parallel_size",
            "must be serve.nodes (2: one GPU per Spark), got 2 × 2",
        ),
        ({"engine": {"pipeline_parallel_size": 3}}, "engine.pipeline_parallel_size", "must divide"),
        (
            {"engine": {"args": ["--disable-log-stats", "--master_port=1"]}},
            "engine.args[1]",
            "--master-port: sparkctl sets it for a model that spans nodes",
        ),
        ({"engine": {"args": ["-tp", "2"]}}, "engine.args[0]", "-tp: sparkctl sets it"),
        (
            {"engine": {"command": None}},
            "engine.command",
            'required with multinode = "ray" in a container',
        ),
        (
            {"engine": {"entrypoint": ["/fix.sh"]}},
            "engine.entrypoint",
            'not with multinode = "ray" (the workers run only Ray',
        ),
    ],
)
def test_a_spanning_entry_says_itself_consistently(
    tmp_path: Path, over: dict[str, Any], field: str, message: str
) -> None:
    entry: dict[str, Any] = {
        "serve": {**SPAN, **over.get("serve", {})},
        "engine": {"command": ["vllm", "serve"], **over.get("engine", {})},
        **DISABLED,
    }
    path = write_model(tmp_path / "models", "big", **entry)
    code, lines = _validate(tmp_path, "")
    assert code == 1 and lines[0].startswith(f"{path}: {field}: ") and message in lines[0], lines


def test_native_containers_keep_their_entrypoint_and_the_image_s(tmp_path: Path) -> None:
    write_model(
        tmp_path / "models",
        "big",
        serve={**SPAN, "multinode": "native"},
        engine={"entrypoint": ["/fix.sh"], "pipeline_parallel_size": 2},
        **DISABLED,
    )
    assert _validate(tmp_path, "")[0] == 0
