"""sparkctl's own container images: the GB10 vLLM builds the catalog names as `localhost/…` tags.

`containerfiles/index.toml` maps every image to its Containerfile, its documented build arguments,
the sparkctl images it is built FROM (built first) and any files a builder must supply.
`sparkctl images build` drives Podman's REST API with podman-py and streams the build log as it
comes; `sparkctl images list` shows, for every image the enabled catalog needs, whether it is here.

podman-py's own `images.build()` reads the whole log before it returns, which for a 20-minute
vLLM build means 20 silent minutes; so the build request is made with podman-py's API client and
its tar helpers directly, and the log lines are printed as Podman sends them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationError

from sparkctl.errors import ImageIndexError, ImagesError, Issue, PodmanUnavailableError
from sparkctl.paths import PACKAGE_DIR
from sparkctl.validation import StrictModel, issues_from_validation, read_toml

if TYPE_CHECKING:
    from sparkctl.catalog import Catalog

# A wheel carries containerfiles/ inside the package, like the catalog (see paths.py).
_IN_WHEEL = PACKAGE_DIR / "_shipped" / "containerfiles"
SHIPPED_CONTAINERFILES = _IN_WHEEL if _IN_WHEEL.is_dir() else PACKAGE_DIR.parent / "containerfiles"
INDEX_NAME = "index.toml"
LABEL_IMAGE = "io.sparkctl.image"
LABEL_INPUTS = "io.sparkctl.inputs-sha256"
_TAG_RE = re.compile(r"^localhost/[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9._-]+$")
_ARG_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")

Say = Callable[[str], None]


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


def instructions(containerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in containerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def copied_files(containerfile: Path, root: Path) -> list[Path]:
    """The files under `root` (the build context) that `containerfile` COPYs or ADDs, sorted;
    sources of other stages (--from) and compiled Python are not the context's."""
    found: set[Path] = set()
    for word, rest in instructions(containerfile):
        if word not in ("COPY", "ADD") or "--from=" in rest:
            continue
        words = json.loads(rest) if rest.startswith("[") else rest.split()
        sources = [w for w in words if not w.startswith("--")][:-1]
        for source in sources:
            top = (root / source).resolve()
            if not top.is_relative_to(root.resolve()):
                continue
            candidates = [top] if top.is_file() else sorted(top.rglob("*"))
            found.update(
                c for c in candidates if c.is_file() and "__pycache__" not in c.parts and c.suffix != ".pyc"
            )
    base = root.resolve()
    return sorted((root / c.relative_to(base) for c in found), key=lambda p: p.as_posix())


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
    path = path or SHIPPED_CONTAINERFILES / INDEX_NAME
    data, issues = read_toml(path)
    if data is None:
        raise ImageIndexError(issues)
    try:
        parsed = IndexFile.model_validate(data)
    except ValidationError as e:
        raise ImageIndexError(issues_from_validation(path, IndexFile, e)) from None
    root = path.parent
    images = {name: Image(name, spec, root) for name, spec in parsed.images.items()}
    issues = []
    seen: dict[str, str] = {}
    for name, image in images.items():
        where = f"images.{name}"
        for tag in image.tags:
            try:
                _tag(tag)
            except ValueError as e:
                issues.append(Issue(str(path), f"{where}.tags", str(e)))
            if tag in seen:
                issues.append(Issue(str(path), f"{where}.tags", f"{tag} is also a tag of images.{seen[tag]}"))
            seen[tag] = name
        for field, values in (
            ("containerfile", [image.spec.containerfile]),
            ("requires", image.spec.requires),
        ):
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
    for name, image in images.items():
        for base in image.spec.bases:
            if base not in seen:
                issues.append(
                    Issue(str(path), f"images.{name}.bases", f"{base} is no image's tag in the index")
                )
    if issues:
        raise ImageIndexError(issues)
    return Index(images, path)


# -------------------------------------------------------------------------------------- podman
def podman_url(env: Mapping[str, str] | None = None) -> str:
    """The Podman API socket sparkctl talks to: $CONTAINER_HOST, else the system (root) or the
    user's socket — podman.socket, which Ubuntu ships but does not enable."""
    env = os.environ if env is None else env
    host = env.get("CONTAINER_HOST") or env.get("DOCKER_HOST")
    if host:
        return "http+unix://" + host.removeprefix("unix://") if host.startswith(("unix://", "/")) else host
    if os.geteuid() == 0:
        return "http+unix:///run/podman/podman.sock"
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return f"http+unix://{runtime}/podman/podman.sock"


@contextmanager
def podman_client(env: Mapping[str, str] | None = None, *, system: bool = True) -> Iterator[Any]:
    """A connected podman-py client, or PodmanUnavailableError that says how to get one.

    `system`: the model units are system units (systemd.bus = "system"), which run root's Podman;
    images in a user's own store would be invisible to them, so only root may build or pull."""
    env = os.environ if env is None else env
    if system and os.geteuid() != 0 and not (env.get("CONTAINER_HOST") or env.get("DOCKER_HOST")):
        raise PodmanUnavailableError(
            "sparkctl's model units run root's Podman, so its images belong in root's image store",
            hint="run it as root (sudo)",
        )
    url = podman_url(env)
    socket = url.removeprefix("http+unix://") if url.startswith("http+unix://") else None
    fix = (
        "sudo systemctl enable --now podman.socket"
        if os.geteuid() == 0 or socket == "/run/podman/podman.sock"
        else "systemctl --user enable --now podman.socket (or run as root)"
    )
    if socket is not None and not Path(socket).exists():
        if shutil.which("podman") is None:
            raise PodmanUnavailableError(
                "Podman is not installed on this machine: sparkctl's images are built and run on the Spark",
                hint="sudo apt install podman (DGX OS 7 / Ubuntu 24.04 ship Podman 4.9 with Quadlet)",
            )
        raise PodmanUnavailableError(f"the Podman API socket {socket} does not exist", hint=fix)
    from podman import PodmanClient

    client: Any = PodmanClient(base_url=url)
    try:
        try:
            client.version()
        except Exception as e:  # podman's APIError, or the HTTP library's connection errors
            raise PodmanUnavailableError(f"cannot talk to Podman at {url}: {e}", hint=fix) from None
        yield client
    finally:
        client.close()


# ------------------------------------------------------------------------------------ listing
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
        if built is not None:
            source = f"build:{built.name}"
        elif "@sha256:" in image:
            source = "pinned"
        else:
            source = "unpinned"
        state, note = "unknown", ""
        if client is not None:
            state = "present" if client.images.exists(image) else "missing"
            if state == "present" and built is not None:
                label = (client.images.get(image).labels or {}).get(LABEL_INPUTS)
                if label and label != built.inputs_digest():
                    state, note = "outdated", "built from an older Containerfile or inputs"
        if state in ("missing", "unknown"):
            if built is not None:
                missing = chain_missing(index, built, client)
                note = "needs " + ", ".join(missing) if missing else f"sparkctl images build {image}"
            else:
                note = f"sparkctl pull {models[0]} pulls it"
        rows.append(ImageRow(image, source, state, models, note))
    return rows


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


# ------------------------------------------------------------------------------------ building
def check_can_build(say: Say) -> None:
    if shutil.which("podman") is None and not os.environ.get("CONTAINER_HOST"):
        raise PodmanUnavailableError(
            "Podman is not installed on this machine: sparkctl's images are built on the Spark itself",
            hint="sudo apt install podman, then sparkctl images build",
        )
    machine = platform.machine()
    if machine not in ("aarch64", "arm64"):
        say(f"note: these images target the GB10 (arm64); built here they are {machine} images")


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
    from podman.domain.images_build import BuildMixin

    missing = image.missing_inputs(overrides)
    if missing:
        raise ImagesError(
            f"{image.tags[0]} cannot be built yet: it needs " + "; ".join(missing),
            hint=f"see containerfiles/README.md and the comments in {image.spec.containerfile}",
        )
    args = image.build_args(overrides)
    context = str(image.root)
    kwargs: dict[str, Any] = {
        "path": context,
        "dockerfile": image.spec.containerfile,
        "tag": image.tags[0],
        "buildargs": args,
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
    body = api.create_tar(anchor=context, exclude=api.prepare_containerignore(context))
    shown = ", ".join(f"{k}={v}" for k, v in sorted(args.items())) or "no build arguments"
    say(f"building {image.tags[0]} from {image.spec.containerfile} ({shown})")
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
    built = client.images.get(image_id)
    for tag in image.tags[1:]:
        repository, _, name = tag.rpartition(":")
        built.tag(repository, name)
    say(f"built {', '.join(image.tags)} ({image_id[:12]})")
    return image_id


_ID_LINE = re.compile(r"^([0-9a-f]{64})$")


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
