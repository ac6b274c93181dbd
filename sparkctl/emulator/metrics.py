"""The counters the emulator keeps (Stats, updated by the generation Engine) and their /metrics
rendering, in the Prometheus names, types and label sets vLLM uses, so dashboards and the
gateway's scrapes read the emulator as they read vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Stats:
    running: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: dict[str, int] = field(default_factory=lambda: {"stop": 0, "length": 0, "abort": 0})


_METRIC_HELP = {
    "vllm:num_requests_running": ("gauge", "Number of requests in model execution batches."),
    "vllm:num_requests_waiting": ("gauge", "Number of requests waiting to be processed."),
    "vllm:prompt_tokens_total": ("counter", "Number of prefill tokens processed."),
    "vllm:generation_tokens_total": ("counter", "Number of generation tokens processed."),
    "vllm:request_success_total": ("counter", "Count of successfully processed requests."),
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(stats: Stats, model_name: str) -> str:
    """Prometheus text exposition, in the names and label sets vLLM uses."""
    label = f'model_name="{_label(model_name)}"'
    samples: dict[str, list[tuple[str, float]]] = {
        "vllm:num_requests_running": [(label, stats.running)],
        "vllm:num_requests_waiting": [(label, 0)],
        "vllm:prompt_tokens_total": [(label, stats.prompt_tokens)],
        "vllm:generation_tokens_total": [(label, stats.generation_tokens)],
        "vllm:request_success_total": [
            (f'finished_reason="{reason}",{label}', n) for reason, n in stats.finished.items()
        ],
    }
    lines: list[str] = []
    for name, values in samples.items():
        kind, doc = _METRIC_HELP[name]
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{{{labels}}} {float(value)}" for labels, value in values)
    return "\n".join(lines) + "\n"
