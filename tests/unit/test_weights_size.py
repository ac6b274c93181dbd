"""What a model's weights take (core/weights.py `snapshot_size`): the files its engine loads, not
every weight-like file the repo carries (the guess of its load time and the refusal of a model
that can never fit are taken from it)."""

from __future__ import annotations

import json
from pathlib import Path

from sparkctl.core.weights import snapshot_size

GIB = 1024**3


def _sparse(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size)


def test_the_shards_the_index_names_and_nothing_in_subfolders(tmp_path: Path) -> None:
    """gpt-oss-120b's layout: top-level shards, and the same weights again in original/ and metal/."""
    shards = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    for name in shards:
        _sparse(tmp_path / name, 20 * GIB)
    weight_map = {f"layer.{i}": shards[i % 3] for i in range(30)}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _sparse(tmp_path / "original" / "model--00001-of-00007.safetensors", 60 * GIB)
    _sparse(tmp_path / "metal" / "model.bin", 65 * GIB)
    _sparse(tmp_path / "stray.safetensors", 5 * GIB)  # not in the index: not loaded
    assert snapshot_size(tmp_path) == 60 * GIB


def test_without_an_index_the_top_level_safetensors_then_bin(tmp_path: Path) -> None:
    _sparse(tmp_path / "pytorch_model.bin", 3 * GIB)
    assert snapshot_size(tmp_path) == 3 * GIB
    _sparse(tmp_path / "model.safetensors", 2 * GIB)  # preferred over .bin, as vLLM does
    assert snapshot_size(tmp_path) == 2 * GIB


def test_a_gguf_repo_counts_one_quantisation(tmp_path: Path) -> None:
    for quant, size in (("Q4_K_M", 4), ("Q8_0", 8), ("F16", 16)):
        _sparse(tmp_path / f"model-{quant}.gguf", size * GIB)
    assert snapshot_size(tmp_path) == 4 * GIB


def test_nothing_to_load_is_zero(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("no weights")
    assert snapshot_size(tmp_path) == 0
