"""What a model lacks on this host before it can start: its weights (and any other repo it
reads) in the shared cache, its container image in Podman's store — each with the command that
fixes it. A start never downloads, so a model unit asks this first (`sparkctl preflight`, its
ExecStartPre=), and so does the owner of a spanning model, of every node it spans, before
anything stops (#15: the peers answer it through their admin API).

Blocking (file system, a `podman` child): call it off the event loop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sparkctl.core.weights import check_weights


@dataclass(frozen=True, slots=True)
class Lack:
    what: Literal["weights", "image"]
    message: str  # what is missing, and what to run
    detail: str = ""  # how the weights check decided (for the unit's journal)


def repo_revision(value: str) -> tuple[str, str]:
    """`REPO[@REV]` → (repo, revision)."""
    repo, _, rev = value.partition("@")
    return repo, rev or "main"


def lacks(
    model_id: str,
    hf_cache: Path,
    repo: str,
    revision: str,
    image: str | None,
    required: Sequence[str] = (),
) -> list[Lack]:
    """Everything `model_id` lacks here, in the order a start would meet it (empty: it can start)."""
    out: list[Lack] = []
    for want_repo, want_rev in [(repo, revision), *map(repo_revision, required)]:
        state = check_weights(hf_cache, want_repo, want_rev)
        if not state.present:
            out.append(
                Lack(
                    "weights",
                    f"weights for {want_repo}@{want_rev} are not in {hf_cache}: run sparkctl pull {model_id}",
                    state.reason,
                )
            )
    # The units' containers are root's (system Quadlet units), in root's image store, which the
    # daemon's own user cannot read: asked by the daemon (a peer's preflight, an owner's check),
    # an image is left to the part's own ExecStartPre= check, which runs as root. Weights are
    # in the shared cache, readable by both.
    if image and os.geteuid() == 0 and (lack := _image_lack(model_id, image)) is not None:
        out.append(lack)
    return out


def _image_lack(model_id: str, image: str) -> Lack | None:
    if shutil.which("podman") is None:
        return Lack("image", f"cannot check image {image}: podman is not installed")
    proc = subprocess.run(["podman", "image", "exists", image], capture_output=True, text=True, check=False)
    if proc.returncode == 1:
        local = image.startswith("localhost/")  # built here, never pulled
        todo = f"sparkctl images build {image}" if local else f"sparkctl pull {model_id}"
        return Lack("image", f"image {image} is not on this host: run {todo}")
    if proc.returncode != 0:
        return Lack("image", f"`podman image exists {image}` failed: {(proc.stderr or proc.stdout).strip()}")
    return None
