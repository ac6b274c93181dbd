"""Are a model's weights on disk? Answered from the Hugging Face cache layout alone, without the
network and without importing huggingface_hub, because a unit runs it at every start
(`sparkctl preflight`) and doctor runs it for every model.

The shared cache (`runtime.hf_cache`) is what the containers see as HF_HOME, so its hub cache is
`<hf_cache>/hub`, laid out as huggingface_hub writes it:

    hub/models--ORG--NAME/refs/REVISION          the commit a branch or tag resolved to
    hub/models--ORG--NAME/snapshots/COMMIT/...   the files, symlinks into blobs/
    hub/models--ORG--NAME/blobs/ETAG[.incomplete] the content (.incomplete while downloading)
    hub/models--ORG--NAME/trees/COMMIT.json      the file listing of COMMIT (huggingface_hub ≥ 1.x)

Complete means: the revision resolves to a snapshot and every file the listing names is there
with its size. Without a listing (a cache written by an older huggingface_hub, or by vLLM itself)
the best evidence is weaker: the snapshot has files, every shard a `*.safetensors.index.json`
names is present, and no blob of the repo is still `.incomplete`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
TREE_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class WeightsState:
    present: bool
    reason: str  # why not (or how it was decided), for messages
    snapshot: Path | None = None


def hub_dir(hf_cache: Path) -> Path:
    """Where huggingface_hub keeps repos when HF_HOME is `hf_cache`."""
    return hf_cache / "hub"


def repo_dir(hf_cache: Path, repo: str) -> Path:
    return hub_dir(hf_cache) / ("models--" + repo.replace("/", "--"))


def weights_present(hf_cache: Path, repo: str, revision: str = "main") -> bool:
    return check_weights(hf_cache, repo, revision).present


def check_weights(hf_cache: Path, repo: str, revision: str = "main") -> WeightsState:
    """Whether `repo` at `revision` is completely in the cache, and if not, why."""
    if repo.startswith("/"):  # the catalog allows a local directory in place of a repo id
        local = Path(repo)
        if local.is_dir() and any(local.iterdir()):
            return WeightsState(True, f"local directory {local}", local)
        return WeightsState(False, f"{local} is not a directory with files")
    base = repo_dir(hf_cache, repo)
    if not base.is_dir():
        return WeightsState(False, f"nothing of {repo} is in the cache")
    commit = _resolve(base, revision)
    if commit is None:
        return WeightsState(False, f"revision {revision!r} of {repo} was never downloaded")
    snapshot = base / "snapshots" / commit
    if not snapshot.is_dir():
        return WeightsState(False, f"no snapshot for commit {commit}")
    listing = _tree_listing(base, commit)
    if listing is not None:
        for name, size in listing.items():
            path = snapshot / name
            try:
                actual = path.stat().st_size  # follows the symlink into blobs/
            except OSError:
                return WeightsState(False, f"{name} is missing (download incomplete)", snapshot)
            if size is not None and actual != size:
                return WeightsState(False, f"{name} has {actual} bytes, expected {size}", snapshot)
        return WeightsState(True, f"all {len(listing)} files of commit {commit[:12]}", snapshot)
    return _check_without_listing(base, snapshot)


def weights_size(hf_cache: Path, repo: str, revision: str = "main") -> int:
    """The bytes of the weights of `repo` at `revision` that an engine loads (0 when it is not
    in the cache): what the model needs in memory at the least, and what its load reads."""
    state = check_weights(hf_cache, repo, revision)
    return snapshot_size(state.snapshot) if state.snapshot is not None else 0


def snapshot_size(snapshot: Path) -> int:
    """The bytes an engine loads from a snapshot (or a local model directory): the shards its
    `*.safetensors.index.json` names, else its top-level `*.safetensors`, else its top-level
    PyTorch `*.bin`, else its smallest top-level `*.gguf` (a GGUF repo holds one file per
    quantisation, and one is served). Subfolders are never counted: a repo may carry the same
    weights again in other formats there (gpt-oss's original/ and metal/, Meta's original/)."""
    for index in sorted(snapshot.glob("*.safetensors.index.json")):
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(weight_map, dict) and weight_map:
            return sum(_size(snapshot / str(shard)) for shard in set(weight_map.values()))
    for pattern in ("*.safetensors", "*.bin"):
        if sizes := [_size(p) for p in snapshot.glob(pattern)]:
            return sum(sizes)
    return min((_size(p) for p in snapshot.glob("*.gguf")), default=0)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size  # follows the symlink into blobs/
    except OSError:
        return 0  # a blob that is gone: check_weights says so where it matters


def _resolve(base: Path, revision: str) -> str | None:
    if _COMMIT_RE.fullmatch(revision):
        return revision
    try:
        commit = (base / "refs" / revision).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return commit if _COMMIT_RE.fullmatch(commit) else None


def _tree_listing(base: Path, commit: str) -> dict[str, int | None] | None:
    """File name → expected size from trees/COMMIT.json, or None when there is no usable listing."""
    try:
        data = json.loads((base / "trees" / f"{commit}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format_version") != TREE_FORMAT_VERSION:
        return None
    files = data.get("files")
    if not isinstance(files, dict):
        return None
    out: dict[str, int | None] = {}
    for name, info in files.items():
        if not isinstance(info, dict):
            return None
        size = info.get("lfs_size") if info.get("lfs_size") is not None else info.get("size")
        out[str(name)] = size if isinstance(size, int) else None
    return out


def _check_without_listing(base: Path, snapshot: Path) -> WeightsState:
    files = [p for p in snapshot.rglob("*") if not p.is_dir()]
    if not files:
        return WeightsState(False, "the snapshot is empty", snapshot)
    for path in files:
        if not path.exists():  # a symlink whose blob is gone
            return WeightsState(False, f"{path.relative_to(snapshot)} points at a missing blob", snapshot)
    blobs = base / "blobs"
    if blobs.is_dir() and any(p.name.endswith(".incomplete") for p in blobs.iterdir()):
        return WeightsState(False, "a download of this repo is unfinished (.incomplete blobs)", snapshot)
    for index in snapshot.glob("*.safetensors.index.json"):
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
        except (OSError, ValueError, AttributeError):
            return WeightsState(False, f"{index.name} is unreadable", snapshot)
        for shard in sorted(set(weight_map.values()) if isinstance(weight_map, dict) else ()):
            if not (snapshot / str(shard)).exists():
                return WeightsState(False, f"shard {shard} named by {index.name} is missing", snapshot)
    return WeightsState(True, f"{len(files)} files (no file listing; checked shards)", snapshot)
