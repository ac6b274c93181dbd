"""The emulator's container image, built from this machine's own files (no registry is reachable
from the sandbox): this interpreter and its standard library, aiohttp and what it needs, sparkctl's
emulator, the shared libraries they load, and a static busybox for `sh` and `wget`.

Its entrypoint runs `sparkctl emulate`, and `vllm` is an alias of it, so model units render the
same `Exec=` against it as against a real vLLM image. The tarball is cached in the sandbox prefix
under a hash of its inputs; importing it into a box takes about half a second.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

from sparkctl.paths import PACKAGE_DIR
from sparkctl.sandbox.box import PREFIX, Box

IMAGE = "localhost/sparkctl-emulator:latest"
SITE = "/opt/sparkctl/site"
ENTRYPOINT = "/usr/local/bin/sparkctl-emulate"
_STDLIB_SKIP = {
    "site-packages",
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "unittest",
    "distutils",
}
# What the emulator imports beyond the standard library, with everything those need.
_ROOT_DISTRIBUTIONS = ("aiohttp",)
BUSYBOX_TOOLS = ("sh", "cat", "env", "grep", "head", "id", "kill", "ls", "ps", "sleep", "tail", "wget")


def _interpreter() -> Path:
    return Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))


def _stdlib_files() -> list[Path]:
    stdlib = Path(sysconfig.get_path("stdlib"))
    files = []
    for root, dirs, names in os.walk(stdlib):
        rel = Path(root).relative_to(stdlib)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in _STDLIB_SKIP and not d.startswith("config-")]
        dirs[:] = [d for d in dirs if d not in ("tests", "test")]
        # Optimised bytecode (.opt-1/.opt-2.pyc) is never loaded without -O: leave it out.
        files += [Path(root) / n for n in names if ".opt-" not in n]
    return files


def _distribution_closure(roots: tuple[str, ...]) -> list[metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = re.split(r"[<>=!~; \[]", todo.pop(), maxsplit=1)[0].strip().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for req in dist.requires or []:
            name_part, _, marker = req.partition(";")
            if marker.strip() and not _marker_holds(marker):
                continue
            todo.append(name_part)
    return list(seen.values())


def _marker_holds(marker: str) -> bool:
    """Whether a requirement's environment marker holds here (no extras are installed)."""
    from packaging.markers import Marker  # present wherever the tests run (pytest needs it)

    return Marker(marker).evaluate({"extra": ""})


def _site_files() -> list[tuple[Path, str]]:
    """(host file, path inside the image) for the emulator's third-party code and sparkctl's."""
    out = []
    for dist in _distribution_closure(_ROOT_DISTRIBUTIONS):
        for f in dist.files or []:
            src = Path(str(dist.locate_file(f)))
            if (
                src.is_file()
                and ".." not in f.parts
                and "__pycache__" not in f.parts
                and ".dist-info" not in str(f)
            ):
                out.append((src, f"{SITE}/{f}"))
    # The emulator package whole (sources only: the image never writes bytecode), and the
    # package marker above it; nothing else of sparkctl's, which needs more than aiohttp.
    emulator = sorted((PACKAGE_DIR / "emulator").glob("*.py"))
    for src in [PACKAGE_DIR / "__init__.py", *emulator]:
        rel = src.relative_to(PACKAGE_DIR).as_posix()
        out.append((src, f"{SITE}/sparkctl/{rel}"))
    return out


def _shared_libraries(binaries: list[Path]) -> set[Path]:
    libs: set[Path] = set()
    for chunk in range(0, len(binaries), 200):
        out = subprocess.run(
            ["ldd", *map(str, binaries[chunk : chunk + 200])], capture_output=True, text=True, check=False
        ).stdout
        for line in out.splitlines():
            m = re.search(r"=> (/\S+)", line) or re.match(r"\s*(/\S+ld-linux\S*)", line)
            if m:
                libs.add(Path(m.group(1)))
    # glibc dlopen()s libgcc_s for thread cancellation: without it SIGTERM crashes Python.
    gcc = Path("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1")
    if gcc.exists():
        libs.add(gcc)
    return libs


def _library_links(libs: set[Path]) -> list[tuple[str, str]]:
    """(path, target) links for libraries known by another name than their file's (the loader
    is /lib64/ld-linux-x86-64.so.2 in every binary, a link into /usr/lib on Debian)."""
    return sorted({(str(lib), os.path.realpath(lib)) for lib in libs if str(lib) != os.path.realpath(lib)})


def _inputs() -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """(host file, path in the image) to copy, and (link, target) names of shared libraries."""
    python = _interpreter()
    files: list[tuple[Path, str]] = [(python, str(python))]
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname:
        lib = Path(libdir) / soname
        files.append((lib, str(lib)))
    files += [(f, str(f)) for f in _stdlib_files()]
    files += _site_files()
    binaries = [src for src, _ in files if src.suffix == ".so" or src == python or ".so." in src.name]
    libs = _shared_libraries(binaries)
    files += [(lib, os.path.realpath(lib)) for lib in sorted(libs)]
    busybox = shutil.which("busybox") or "/bin/busybox"
    files.append((Path(busybox), "/usr/bin/busybox"))
    return files, _library_links(libs)


def build(cache: Path = PREFIX / "images") -> Path:
    """The image tarball, built now if its inputs changed."""
    files, links = _inputs()
    tar_path = cache / f"sparkctl-emulator-{_digest(files)}.tar"
    if tar_path.exists():
        return tar_path
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("sparkctl-emulator-*.tar"):
        old.unlink()
    tmp = tar_path.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        _add_skeleton(tar)
        added = _add_files(tar, files)
        _add_library_links(tar, links, added)
        _add_commands(tar)
        _add_text(
            tar, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        )
        _add_text(tar, "etc/group", "root:x:0:\nnogroup:x:65534:\n")
    tmp.rename(tar_path)
    return tar_path


def _digest(files: list[tuple[Path, str]]) -> str:
    """A name for the inputs: each file's place in the image, size and mtime."""
    digest = hashlib.sha256(Path(__file__).read_bytes())  # a change to this builder, too
    for src, dst in files:
        st = src.stat()
        digest.update(f"{dst}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _add_skeleton(tar: tarfile.TarFile) -> None:
    """The top-level directories, and the merged-/usr links."""
    for d in ("tmp", "var/tmp", "proc", "sys", "dev", "run", "root", "etc", "usr/local/bin"):
        _add_dir(tar, d, 0o1777 if d.endswith("tmp") else 0o755)
    for link, target in (
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ):
        _add_link(tar, link, target)


def _add_files(tar: tarfile.TarFile, files: list[tuple[Path, str]]) -> set[str]:
    """Each file once, at its path in the image; the names added."""
    added: set[str] = set()
    for src, dst in files:
        dst = dst.lstrip("/")
        if dst.startswith(("lib/", "lib64/", "bin/", "sbin/")):
            dst = "usr/" + dst  # merged /usr: the top-level names are links
        if dst not in added:
            tar.add(src.resolve(), arcname=dst, recursive=False)  # the file, not a link to it
            added.add(dst)
    return added


def _add_library_links(tar: tarfile.TarFile, links: list[tuple[str, str]], added: set[str]) -> None:
    for link, target in links:
        name = link.lstrip("/")
        name = "usr/" + name if name.startswith(("lib/", "lib64/")) else name
        if name not in added:
            _add_link(tar, name, target)
            added.add(name)


def _add_commands(tar: tarfile.TarFile) -> None:
    """python3, the busybox tools, and the entrypoint with its `vllm` alias."""
    python = str(_interpreter())
    _add_link(tar, "usr/bin/python3", python)
    _add_link(tar, "usr/local/bin/python3", python)
    for tool in BUSYBOX_TOOLS:
        _add_link(tar, f"usr/bin/{tool}", "busybox")
    _add_text(tar, ENTRYPOINT[1:], f'#!/bin/sh\nexec {python} -m sparkctl.emulator "$@"\n', 0o755)
    _add_link(tar, "usr/local/bin/vllm", "sparkctl-emulate")


def _add_dir(tar: tarfile.TarFile, name: str, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    tar.addfile(info)


def _add_text(tar: tarfile.TarFile, name: str, text: str, mode: int = 0o644) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def import_into(box: Box, tar: Path | None = None, name: str = IMAGE) -> str:
    tar = tar or build()
    box.run(
        "podman",
        "import",
        "-q",
        "--change",
        f'ENTRYPOINT ["{ENTRYPOINT}"]',
        "--change",
        "CMD []",
        "--change",
        "ENV PATH=/usr/local/bin:/usr/bin",
        "--change",
        f"ENV PYTHONPATH={SITE}",
        "--change",
        "ENV PYTHONDONTWRITEBYTECODE=1",
        str(tar),
        name,
        timeout=120,
    )
    return name
