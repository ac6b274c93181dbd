"""`sparkctl images list`: one row per image the enabled catalog needs, and whether it is here.

An image is built here (its tag is in the index), pinned (by digest) or unpinned; it is present,
outdated (built from older inputs than the index's), missing, or unknown when Podman cannot be
asked (`client` None). The note says what gets a missing image: the inputs a build still needs,
the build command, or the pull.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparkctl.tools.images.index import LABEL_INPUTS, Image, Index

if TYPE_CHECKING:
    from sparkctl.catalog import Catalog


def catalog_images(catalog: Catalog) -> dict[str, list[str]]:
    """Image → ids of the enabled models that run on it."""
    out: dict[str, list[str]] = {}
    for model in catalog.enabled:
        image = model.spec.engine.image
        if model.spec.engine.runtime == "container" and image:
            out.setdefault(image, []).append(model.id)
    return dict(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class ImageRow:
    image: str
    source: str  # "build:NAME" | "pinned" | "unpinned"
    state: str  # "present" | "outdated" | "missing" | "unknown"
    models: list[str]
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "source": self.source,
            "state": self.state,
            "models": self.models,
            "note": self.note,
        }


def image_rows(catalog: Catalog, index: Index, client: Any | None) -> list[ImageRow]:
    """One row per image the enabled catalog needs; state "unknown" without a Podman client."""
    rows = []
    for image, models in catalog_images(catalog).items():
        built = index.by_tag(image)
        state, note = _state(image, built, client)
        if state in ("missing", "unknown"):
            if built is not None:
                missing = chain_missing(index, built, client)
                note = "needs " + ", ".join(missing) if missing else f"sparkctl images build {image}"
            else:
                note = f"sparkctl pull {models[0]} pulls it"
        rows.append(ImageRow(image, _source(image, built), state, models, note))
    return rows


def _source(image: str, built: Image | None) -> str:
    if built is not None:
        return f"build:{built.name}"
    return "pinned" if "@sha256:" in image else "unpinned"


def _state(image: str, built: Image | None, client: Any | None) -> tuple[str, str]:
    """(state, note) as Podman sees the image; an indexed one is outdated when its label's
    digest is not its inputs' digest now."""
    if client is None:
        return "unknown", ""
    if not client.images.exists(image):
        return "missing", ""
    if built is not None:
        label = (client.images.get(image).labels or {}).get(LABEL_INPUTS)
        if label and label != built.inputs_digest():
            return "outdated", "built from an older Containerfile or inputs"
    return "present", ""


def chain_missing(index: Index, image: Image, client: Any | None) -> list[str]:
    """Inputs missing for `image` and for the sparkctl bases it needs that are not here (all of
    them when Podman cannot be asked)."""
    out = []
    for step in index.build_order([image]):
        if step is not image and client is not None and all(client.images.exists(t) for t in step.tags):
            continue
        label = "" if step is image else f" (for {step.tags[0]})"
        out += [m + label for m in step.missing_inputs()]
    return out
