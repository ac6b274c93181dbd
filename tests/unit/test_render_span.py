"""A model that spans Sparks renders, per node, its head on the owner and a worker on each other
node it spans (BRIEF §9, #15), in vLLM's two multi-node forms."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from sparkctl.catalog import load_catalog, span
from sparkctl.settings import Settings
from sparkctl.units.render import render
from tests.helpers import write_model

ADDRESSES = {"spark-a": "10.77.0.1", "spark-b": "10.77.0.2", "spark-c": "10.77.0.3"}
SPAN = {"nodes": 2, "gpu": "exclusive", "owner": "spark-a"}
VLLM = {"command": ["vllm", "serve"], "host_port": 18555}
IFNAMES = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "UCX_NET_DEVICES")


def settings_for(node: str, *, nodes: tuple[str, ...] = ("spark-a", "spark-b")) -> Settings:
    return Settings.model_validate(
        {
            "cluster": {
                "node": node,
                "interface": "enp1s0f1np1",
                "address": ADDRESSES[node],
                "peers": [
                    {"name": n, "url": f"http://{ADDRESSES[n]}:8009", "api_key_file": "/k"}
                    for n in nodes
                    if n != node
                ],
            }
        }
    )


def rendered(tmp_path: Path, node: str, **kw: Any) -> dict[str, str]:
    settings = settings_for(node, **kw)
    return {f.name: f.text for f in render(load_catalog(settings, [tmp_path]), settings)}


def lines(text: str, key: str) -> list[str]:
    return [ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith(key + "=")]


def line(text: str, key: str) -> str:
    (found,) = lines(text, key)
    return found


def env(text: str) -> dict[str, str]:
    return dict(v.strip('"').split("=", 1) for v in lines(text, "Environment"))


def argv(text: str, key: str) -> list[str]:
    # systemd says `$` and `%` twice for a literal one; shlex does the rest of its unquoting here.
    return [w.replace("$$", "$").replace("%%", "%") for w in shlex.split(line(text, key))]


def test_ray_head_on_the_owner_and_a_ray_worker_on_the_other_node(tmp_path: Path) -> None:
    write_model(tmp_path, "big", serve=SPAN, engine=VLLM)
    write_model(tmp_path, "local")
    head = rendered(tmp_path, "spark-a")
    worker = rendered(tmp_path, "spark-b")
    # Same names on both nodes; the model's own port on the head only.
    assert "sparkctl-big.container" in head and "sparkctl-big.socket" in head
    assert "sparkctl-big.container" in worker and "sparkctl-big.socket" not in worker
    h, w = head["sparkctl-big.container"], worker["sparkctl-big.container"]

    assert argv(h, "Exec")[:2] == ["vllm", "serve"]
    assert argv(h, "Exec")[-4:] == ["--tensor-parallel-size", "2", "--distributed-executor-backend", "ray"]
    assert "--host 127.0.0.1 --port 18555" in line(h, "Exec")
    assert lines(w, "Exec") == []  # the worker runs Ray alone
    entry_h = next(a for a in lines(h, "PodmanArgs") if "--entrypoint" in a)
    entry_w = next(a for a in lines(w, "PodmanArgs") if "--entrypoint" in a)
    assert "ray start --head" in entry_h and 'exec \\\\\\"$$@\\\\\\"' in entry_h
    assert "ray start --block --address=$$SPARKCTL_RAY_HEAD" in entry_w

    for text, own in ((h, "10.77.0.1"), (w, "10.77.0.2")):
        e = env(text)
        assert e["VLLM_HOST_IP"] == own and e["MASTER_ADDR"] == "10.77.0.1"
        assert all(e[k] == "enp1s0f1np1" for k in IFNAMES)
        assert e["RAY_memory_monitor_refresh_ms"] == "0"
        assert "Network=host" in text and "PublishPort" not in text
        assert "AddDevice=/dev/infiniband" in text and "AddDevice=nvidia.com/gpu=all" in text
        assert "Conflicts=sparkctl-local.service" in text  # the tenant of every node it spans
        assert lines(text, "ExecStartPre")  # weights and image checked on every node
    assert env(h)["SPARKCTL_RAY_PORT"] == "6379" and env(w)["SPARKCTL_RAY_HEAD"] == "10.77.0.1:6379"

    # The head is ready when it answers; a worker never listens, so it has no probe or health.
    assert "ExecStartPost=" in h and "HealthCmd=" in h
    assert "ExecStartPost=" not in w and "HealthCmd=" not in w
    assert "(head, rank 0 of 2)" in line(h, "Description")
    assert "(worker, rank 1 of 2; head on spark-a)" in line(w, "Description")


def test_native_head_and_headless_worker(tmp_path: Path) -> None:
    write_model(
        tmp_path,
        "big",
        serve={**SPAN, "multinode": "native"},
        engine={**VLLM, "pipeline_parallel_size": 2, "entrypoint": ["/fix.sh"]},
    )
    h = rendered(tmp_path, "spark-a")["sparkctl-big.container"]
    w = rendered(tmp_path, "spark-b")["sparkctl-big.container"]
    common = ["--pipeline-parallel-size", "2", "--tensor-parallel-size", "1", "--nnodes", "2"]
    tail_h = [*common, "--node-rank", "0", "--master-addr", "10.77.0.1", "--master-port", "29501"]
    assert argv(h, "Exec")[-len(tail_h) :] == tail_h
    tail_w = [
        *common,
        "--node-rank",
        "1",
        "--master-addr",
        "10.77.0.1",
        "--master-port",
        "29501",
        "--headless",
    ]
    assert argv(w, "Exec")[-len(tail_w) :] == tail_w
    # Both run the same model with the same flags besides their rank.
    assert argv(h, "Exec")[: -len(tail_h)] == argv(w, "Exec")[: -len(tail_w)]
    for text in (h, w):
        assert 'PodmanArgs="--entrypoint=[\\"/fix.sh\\"]"' in text  # the catalog's own, kept
        assert env(text)["MASTER_PORT"] == "29501" and "RAY_memory_monitor_refresh_ms" not in env(text)


def test_process_parts_reach_the_other_parts_on_the_link_only(tmp_path: Path) -> None:
    write_model(
        tmp_path,
        "big",
        serve={**SPAN, "multinode": "native"},
        engine={"runtime": "process", "image": None, "command": ["/opt/vllm/bin/vllm", "serve"]},
    )
    write_model(
        tmp_path,
        "rayed",
        serve=SPAN,
        engine={"runtime": "process", "image": None, "tensor_parallel_size": 2, "port": 28002},
    )
    for node in ("spark-a", "spark-b"):
        files = rendered(tmp_path, node)
        text = files["sparkctl-big.service"]
        assert line(text, "IPAddressAllow") == "localhost 10.77.0.1 10.77.0.2"
        assert line(text, "IPAddressDeny") == "any"
        assert env(text)["VLLM_HOST_IP"] == ADDRESSES[node]
        rayed = argv(files["sparkctl-rayed.service"], "ExecStart")
        assert rayed[:4] == [
            "/bin/sh",
            "-c",
            span.RAY_HEAD_SCRIPT if node == "spark-a" else span.RAY_WORKER_SCRIPT,
            "sparkctl-ray",
        ]
        # The typed size renders itself, once.
        assert rayed.count("--tensor-parallel-size") == (1 if node == "spark-a" else 0)
    assert argv(rendered(tmp_path, "spark-b")["sparkctl-rayed.service"], "ExecStart")[4:] == []


def test_a_node_the_model_does_not_span_has_no_part_of_it(tmp_path: Path) -> None:
    write_model(tmp_path, "big", serve={**SPAN, "owner": "spark-b"}, engine=VLLM)
    write_model(tmp_path, "local")
    three = ("spark-a", "spark-b", "spark-c")
    # Owner spark-b; the others by name: spark-a is rank 1, spark-c is left out.
    assert (
        "(worker, rank 1 of 2; head on spark-b)"
        in rendered(tmp_path, "spark-a", nodes=three)["sparkctl-big.container"]
    )
    files = rendered(tmp_path, "spark-c", nodes=three)
    assert not any("big" in name for name in files)
    assert "sparkctl-big" not in files["sparkctl-local.container"]  # no Conflicts= with a unit not here


def test_the_ray_scripts_start_ray_then_run_vllm_with_its_words_intact(tmp_path: Path) -> None:
    """The start scripts, run by a real shell against a `ray` that records what it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "ray.args"
    ray = bin_dir / "ray"
    ray.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {record}\n')
    ray.chmod(0o755)
    environ = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "VLLM_HOST_IP": "10.77.0.1"}
    head = ["/bin/sh", "-c", span.RAY_HEAD_SCRIPT, span.RAY_SCRIPT_NAME]
    out = subprocess.run(
        [*head, "printf", "<%s>", "a b", '{"x": 1}', "$HOME"],
        env={**environ, "SPARKCTL_RAY_PORT": "6379"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == '<a b><{"x": 1}><$HOME>'
    assert record.read_text().split() == [
        "start", "--head", "--node-ip-address=10.77.0.1", "--port=6379", "--disable-usage-stats"
    ]  # fmt: skip
    record.unlink()
    worker = ["/bin/sh", "-c", span.RAY_WORKER_SCRIPT, span.RAY_SCRIPT_NAME]
    subprocess.run(worker, env={**environ, "SPARKCTL_RAY_HEAD": "10.77.0.2:6379"}, check=True)
    assert record.read_text().split() == [
        "start", "--block", "--address=10.77.0.2:6379", "--node-ip-address=10.77.0.1", "--disable-usage-stats"
    ]  # fmt: skip
    # A head whose Ray does not start never runs vLLM.
    ray.write_text("#!/bin/sh\nexit 3\n")
    failed = subprocess.run([*head, "touch", str(tmp_path / "ran")], env=environ, check=False)
    assert failed.returncode == 3 and not (tmp_path / "ran").exists()
