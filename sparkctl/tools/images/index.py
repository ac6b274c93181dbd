"""The image index: `containerfiles/index.toml`, read into `Index` and `Image`.

The index maps every image sparkctl builds to its Containerfile, its documented build arguments,
the sparkctl images it is built FROM (built first) and any files a builder must supply.
`load_index` validates all of it up front (tags, paths inside containerfiles/, argument names,
bases that name an indexed tag) and raises one ImageIndexError listing every issue. An `Image`
knows its build order, what its builder must still supply, and a digest of its inputs, which is
stored as a label so an image built from older inputs shows as outdated.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError

from sparkctl.errors import ImageIndexError, ImagesError, Issue
from sparkctl.paths import PACKAGE_DIR
from sparkctl.tools.images.containerfile import copied_files
from sparkctl.validation import StrictModel, issues_from_validation, read_toml

# A wheel carries containerfiles/ inside the package, like the catalog (see paths.py).
_IN_WHEEL = PACKAGE_DIR / "_shipped" / "containerfiles"
SHIPPED_CONTAINERFILES = _IN_WHEEL if _IN_WHEEL.is_dir() else PACKAGE_DIR.parent / "containerfiles"
INDEX_NAME = "index.toml"
LABEL_IMAGE = "io.sparkctl.image"
LABEL_INPUTS = "io.sparkctl.inputs-sha256"
_TAG_RE = re.compile(r"^localhost/[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9._-]+$")
_ARG_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _tag(value: str) -> str:
    if not _TAG_RE.fullmatch(value):
        raise ValueError(f"must be a localhost/NAME:TAG image tag, got {value!r}")
    return value


def _relative(value: str) -> str:
    if value.startswith("/") or ".." in Path(value).parts or not value:
        raise ValueError(f"must be a path inside containerfiles/, got {value!r}")
    return value


class BuildArg(StrictModel):
    help: Annotated[str, Field(min_length=1)]
    # None: the builder must pass it (`--build-arg NAME=VALUE`); the build refuses to start without.
    default: str | None = None


class ImageSpec(StrictModel):
    tags: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    containerfile: str
    description: Annotated[str, Field(min_length=1)]
    bases: list[str] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list)
    args: dict[str, BuildArg] = Field(default_factory=dict)


class IndexFile(StrictModel):
    images: dict[str, ImageSpec]


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    spec: ImageSpec
    root: Path  # the containerfiles/ directory: the build context

    @property
    def tags(self) -> list[str]:
        return self.spec.tags

    @property
    def containerfile(self) -> Path:
        return self.root / self.spec.containerfile

    def build_args(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """The arguments this image is built with: index defaults, then the builder's values."""
        out = {k: a.default for k, a in self.spec.args.items() if a.default is not None}
        out.update({k: v for k, v in (overrides or {}).items() if k in self.spec.args})
        return out

    def missing_inputs(self, overrides: Mapping[str, str] | None = None) -> list[str]:
        """What the builder must still supply: files under containerfiles/ and build arguments."""
        args = self.build_args(overrides)
        missing = [f"file containerfiles/{f}" for f in self.spec.requires if not (self.root / f).is_file()]
        missing += [f"--build-arg {k}=…" for k in self.spec.args if k not in args]
        return missing

    def inputs_digest(self, overrides: Mapping[str, str] | None = None) -> str:
        """A digest of what determines the build (the Containerfile, every file it copies from the
        context, the arguments): stored as a label, so `images list` can tell an image built from
        an older Containerfile, fix or mod."""
        h = hashlib.sha256()
        files = [self.containerfile, *copied_files(self.containerfile, self.root)]
        files += [self.root / f for f in self.spec.requires if self.root / f not in files]
        for path in files:
            h.update(path.relative_to(self.root).as_posix().encode() + b"\0")
            h.update(path.read_bytes() if path.is_file() else b"<missing>")
        h.update(json.dumps(self.build_args(overrides), sort_keys=True).encode())
        return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Index:
    images: dict[str, Image]
    path: Path

    def find(self, name_or_tag: str) -> Image:
        if name_or_tag in self.images:
            return self.images[name_or_tag]
        for image in self.images.values():
            if name_or_tag in image.tags:
                return image
        known = ", ".join(t for i in self.images.values() for t in i.tags)
        raise ImagesError(f"no image {name_or_tag!r} in {self.path} (known: {known})")

    def by_tag(self, tag: str) -> Image | None:
        return next((i for i in self.images.values() if tag in i.tags), None)

    def build_order(self, targets: Iterable[Image]) -> list[Image]:
        """`targets` with the sparkctl images they are built FROM, bases first."""
        order: list[Image] = []

        def visit(image: Image, path: tuple[str, ...]) -> None:
            if image.name in path:
                raise ImagesError(f"the image index has a cycle: {' → '.join((*path, image.name))}")
            for base in image.spec.bases:
                visit(self.find(base), (*path, image.name))
            if image not in order:
                order.append(image)

        for target in targets:
            visit(target, ())
        return order


def load_index(path: Path | None = None) -> Index:
    """The index at `path` (default: the shipped one), every issue in it raised at once."""
    path = path or SHIPPED_CONTAINERFILES / INDEX_NAME
    data, issues = read_toml(path)
    if data is None:
        raise ImageIndexError(issues)
    try:
        parsed = IndexFile.model_validate(data)
    except ValidationError as e:
        raise ImageIndexError(issues_from_validation(path, IndexFile, e)) from None
    images = {name: Image(name, spec, path.parent) for name, spec in parsed.images.items()}
    issues = _index_issues(path, images)
    if issues:
        raise ImageIndexError(issues)
    return Index(images, path)


def _index_issues(path: Path, images: Mapping[str, Image]) -> list[Issue]:
    issues: list[Issue] = []
    seen: dict[str, str] = {}  # tag → the image that has it, filled in index order
    for name, image in images.items():
        issues += _image_issues(path, name, image, seen)
    for name, image in images.items():
        for base in image.spec.bases:
            if base not in seen:
                issues.append(
                    Issue(str(path), f"images.{name}.bases", f"{base} is no image's tag in the index")
                )
    return issues


def _image_issues(path: Path, name: str, image: Image, seen: dict[str, str]) -> list[Issue]:
    """One image's issues (bases aside: they need every tag); records its tags in `seen`."""
    where = f"images.{name}"
    issues: list[Issue] = []
    for tag in image.tags:
        try:
            _tag(tag)
        except ValueError as e:
            issues.append(Issue(str(path), f"{where}.tags", str(e)))
        if tag in seen:
            issues.append(Issue(str(path), f"{where}.tags", f"{tag} is also a tag of images.{seen[tag]}"))
        seen[tag] = name
    for field, values in (("containerfile", [image.spec.containerfile]), ("requires", image.spec.requires)):
        for value in values:
            try:
                _relative(value)
            except ValueError as e:
                issues.append(Issue(str(path), f"{where}.{field}", str(e)))
    if not image.containerfile.is_file():
        issues.append(Issue(str(path), f"{where}.containerfile", f"no such file: {image.containerfile}"))
    for arg in image.spec.args:
        if not _ARG_RE.fullmatch(arg):
            issues.append(Issue(str(path), f"{where}.args.{arg}", "build arguments are UPPER_CASE names"))
    return issues
