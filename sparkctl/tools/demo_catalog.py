"""The demos' catalog (`sparkctl demo`, tools/demo.py and demo_cluster.py): emulated models, each
a catalog file as an operator would write it, `sparkctl emulate` standing in for vLLM."""

from __future__ import annotations

import json

from sparkctl.sandbox import image

DEMO_MODELS = {
    "demo-chat": {
        "description": "An emulated chat model, run as a plain service",
        "capabilities": ["chat", "tools", "embeddings"],
        "process": True,
        "fraction": 0.45,
        "load": 2.0,
        "exclusive": False,
    },
    "demo-coder": {
        "description": "An emulated coding model in a Quadlet container",
        "capabilities": ["chat", "tools", "code"],
        "process": False,
        "fraction": 0.45,
        "load": 3.0,
        "exclusive": False,
    },
    "demo-large": {
        "description": "An emulated large model that needs the GPU to itself",
        "capabilities": ["chat", "reasoning"],
        "process": False,
        "fraction": 0.85,
        "load": 4.0,
        "exclusive": True,
    },
}


def catalog_entry(
    model_id: str, spec: dict[str, object], port: int, sparkctl: str, serve: tuple[str, ...] = ()
) -> str:
    """One emulated model's catalog file; `serve`: more [serve] lines (a cluster demo's span)."""
    lines = [
        f'id = "{model_id}"',
        f'description = "{spec["description"]}"',
        'status = "experimental"',
        f"capabilities = {json.dumps(spec['capabilities'])}",
        "[source]",
        f'hf_repo = "sparkctl-demo/{model_id}"',
        "[engine]",
        f"port = {port}",
        f"host_port = {port}",
        "max_model_len = 8192",
        f"gpu_memory_utilization = {spec['fraction']}",
        f'args = ["--load-time", "{spec["load"]}", "--tokens-per-second", "40"]',
        "ulimits = {}",  # the sandbox cannot raise memlock: see sparkctl/sandbox/README
    ]
    if spec["process"]:
        lines += ['runtime = "process"', f'command = ["{sparkctl}", "emulate"]']
    else:
        lines += [f'image = "{image.IMAGE}"']
    lines += ["[serve]", 'idle_timeout = "5m"', 'start_timeout = "2m"']
    if spec["exclusive"]:
        lines.append('gpu = "exclusive"')
    lines += serve
    return "\n".join(lines) + "\n"
