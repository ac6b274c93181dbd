"""Building one indexed image through Podman's REST API, its log streamed as it comes.

podman-py's own `images.build()` reads the whole log before it returns, which for a 20-minute
vLLM build means 20 silent minutes; so the build request is made with podman-py's API client and
its tar helpers directly, and the log lines are passed to `say` as Podman sends them. `build`
refuses to start while the image misses an input, labels the image with its inputs digest, and
adds the image's other tags once it is built. Building bases first is the caller's job
(`Index.build_order`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sparkctl.errors import ImagesError, PodmanUnavailableError
from sparkctl.tools.images.index import LABEL_IMAGE, LABEL_INPUTS, Image

Say = Callable[[str], None]
_ID_LINE = re.compile(r"^([0-9a-f]{64})$")


def check_can_build(say: Say) -> None:
    if shutil.which("podman") is None and not os.environ.get("CONTAINER_HOST"):
        raise PodmanUnavailableError(
            "Podman is not installed on this machine: sparkctl's images are built on the Spark itself",
            hint="sudo apt install podman, then sparkctl images build",
        )
    machine = platform.machine()
    if machine not in ("aarch64", "arm64"):
        say(f"note: these images target the GB10 (arm64); built here they are {machine} images")


def _build_params(image: Image, overrides: Mapping[str, str] | None, no_cache: bool) -> dict[str, Any]:
    """The query parameters of Podman's POST /build for `image`."""
    from podman.domain.images_build import BuildMixin

    kwargs: dict[str, Any] = {
        "path": str(image.root),
        "dockerfile": image.spec.containerfile,
        "tag": image.tags[0],
        "buildargs": image.build_args(overrides),
        "labels": {LABEL_IMAGE: image.name, LABEL_INPUTS: image.inputs_digest(overrides)},
        "nocache": no_cache,
        "rm": True,
        "forcerm": True,
        "layers": True,
    }
    params: dict[str, Any] = dict(BuildMixin._render_params(kwargs))
    # A path inside the context, as Podman's API takes it (podman-py's prepare_containerfile
    # would copy the file into the context, which may be read-only in an installed package).
    params["dockerfile"] = image.spec.containerfile
    return params


def build(
    image: Image,
    client: Any,
    *,
    say: Say,
    overrides: Mapping[str, str] | None = None,
    no_cache: bool = False,
) -> str:
    """Build one image, streaming its log through `say`; returns the new image id."""
    from podman import api

    missing = image.missing_inputs(overrides)
    if missing:
        raise ImagesError(
            f"{image.tags[0]} cannot be built yet: it needs " + "; ".join(missing),
            hint=f"see containerfiles/README.md and the comments in {image.spec.containerfile}",
        )
    params = _build_params(image, overrides, no_cache)
    context = str(image.root)
    body = api.create_tar(anchor=context, exclude=api.prepare_containerignore(context))
    shown = ", ".join(f"{k}={v}" for k, v in sorted(image.build_args(overrides).items()))
    say(f"building {image.tags[0]} from {image.spec.containerfile} ({shown or 'no build arguments'})")
    try:
        response = client.api.post(
            "/build",
            params=params,
            data=body,
            headers={"Content-type": "application/x-tar"},
            stream=True,
        )
        response.raise_for_status()
        image_id = _follow_build_log(response.iter_lines(), say)
    finally:
        body.close()
    if image_id is None:
        raise ImagesError(f"building {image.tags[0]} ended without an image")
    _tag_the_rest(client, image, image_id)
    say(f"built {', '.join(image.tags)} ({image_id[:12]})")
    return image_id


def _tag_the_rest(client: Any, image: Image, image_id: str) -> None:
    """The build tagged the first tag; the index may name more."""
    built = client.images.get(image_id)
    for tag in image.tags[1:]:
        repository, _, name = tag.rpartition(":")
        built.tag(repository, name)


def _follow_build_log(lines: Iterable[bytes], say: Say) -> str | None:
    """Print Podman's build stream as it arrives; the last line that is a bare id is the image."""
    image_id = None
    for raw in lines:
        if not raw:
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            say(raw.decode(errors="replace"))
            continue
        if item.get("error"):
            raise ImagesError(f"the build failed: {str(item['error']).strip()}")
        text = str(item.get("stream", "")).rstrip("\n")
        if not text:
            continue
        match = _ID_LINE.match(text.strip())
        if match:
            image_id = match.group(1)
            continue
        for line in text.splitlines():
            say(line)
    return image_id
