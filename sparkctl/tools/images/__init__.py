"""sparkctl's own container images: the GB10 vLLM builds the catalog names as `localhost/…` tags.

`containerfiles/index.toml` maps every image to its Containerfile, its documented build arguments,
the sparkctl images it is built FROM (built first) and any files a builder must supply (index).
`sparkctl images build` drives Podman's REST API with podman-py (podman) and streams the build
log as it comes (builder); `sparkctl images list` shows, for every image the enabled catalog needs,
whether it is here (rows). containerfile reads the Containerfiles themselves.

This module only re-exports what callers use; the submodules import each other, never it.
"""

from sparkctl.tools.images.builder import Say, build, check_can_build
from sparkctl.tools.images.containerfile import copied_files, instructions
from sparkctl.tools.images.index import (
    INDEX_NAME,
    LABEL_IMAGE,
    LABEL_INPUTS,
    SHIPPED_CONTAINERFILES,
    BuildArg,
    Image,
    ImageSpec,
    Index,
    load_index,
)
from sparkctl.tools.images.podman import podman_client, podman_url
from sparkctl.tools.images.rows import ImageRow, catalog_images, chain_missing, image_rows

__all__ = [
    "INDEX_NAME",
    "LABEL_IMAGE",
    "LABEL_INPUTS",
    "SHIPPED_CONTAINERFILES",
    "BuildArg",
    "Image",
    "ImageRow",
    "ImageSpec",
    "Index",
    "Say",
    "build",
    "catalog_images",
    "chain_missing",
    "check_can_build",
    "copied_files",
    "image_rows",
    "instructions",
    "load_index",
    "podman_client",
    "podman_url",
]
