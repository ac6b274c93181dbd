#!/usr/bin/env python3
"""srcfix.py [--check] [--lenient] FIX ROOT

Applies one of sparkctl's source fixes (containerfiles/fixes/*.py) to a source tree or a
site-packages directory ROOT. A fix is a list of edits; each edit names the file it changes, the
pattern it rewrites and how to recognise a file that already has the change, whether made by an
earlier run or by upstream. So a fix is idempotent, and it keeps working when vLLM or
transformers move code around: it does not need the exact lines a diff would, only its anchor.

Each edit ends in one of three states, printed one line each:
  applied       the anchor was found and rewritten (and the result checked: the change is there,
                and a Python file still compiles)
  in effect     the file already does what the edit wants
  does not fit  neither: upstream changed the code this edit knows; a person must look
An edit without a pattern is a precondition: it "holds", or it does not fit. A build runs
strict (any "does not fit" exits 1 and writes nothing, so no half-fixed image is shipped; the
edits that would have applied say "not written"); an entrypoint wrapper runs --lenient (what
fits is applied, the rest is reported, exit 0). --check reports without writing and exits 1
when something would change or does not fit. Exit 2: a usage error.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Replacement = str | Callable[[re.Match[str]], str]
Test = str | Callable[[str], bool]


@dataclass(frozen=True)
class Edit:
    """Rewrite every match of `pattern` (a MULTILINE regex) in the first of `paths` that exists.

    `done` recognises a file that needs nothing (a regex that must match, or a predicate); it is
    asked first, and again after rewriting, so a wrong edit fails here, not in the image.
    `expect` is how many matches a needy file must have (None: one or more). With no `pattern`
    the edit only checks that `done` holds, and `misfit` says what it means when it does not."""

    what: str
    paths: tuple[str, ...]
    pattern: str | None
    replacement: Replacement
    done: Test
    expect: int | None = 1
    misfit: str = "its anchor is not there"
    flags: int = field(default=re.MULTILINE)

    def is_done(self, text: str) -> bool:
        if callable(self.done):
            return self.done(text)
        return re.search(self.done, text, self.flags) is not None

    def rewrite(self, text: str) -> tuple[str, int]:
        if self.pattern is None:
            return text, 0
        return re.subn(self.pattern, self.replacement, text, flags=self.flags)


@dataclass(frozen=True)
class Outcome:
    edit: Edit
    state: str  # "applied" | "in effect" | "does not fit"
    path: Path | None
    detail: str = ""


def locate(root: Path, edit: Edit) -> Path | None:
    return next((root / p for p in edit.paths if (root / p).is_file()), None)


def plan(root: Path, edits: list[Edit]) -> tuple[list[Outcome], dict[Path, str]]:
    """What each edit would do, and the new text of every file that changes (nothing written)."""
    texts: dict[Path, str] = {}
    outcomes = []
    for edit in edits:
        path = locate(root, edit)
        if path is None:
            outcomes.append(Outcome(edit, "does not fit", None, f"none of {', '.join(edit.paths)} exists"))
            continue
        text = texts.get(path)
        if text is None:
            text = read(path)
        if edit.is_done(text):
            outcomes.append(Outcome(edit, "in effect", path))
            continue
        new, count = edit.rewrite(text)
        if count == 0 or new == text:
            outcomes.append(Outcome(edit, "does not fit", path, edit.misfit))
        elif edit.expect is not None and count != edit.expect:
            detail = f"its anchor is there {count} times, expected {edit.expect}"
            outcomes.append(Outcome(edit, "does not fit", path, detail))
        elif not edit.is_done(new):
            outcomes.append(Outcome(edit, "does not fit", path, "the rewritten file still lacks the change"))
        elif path.suffix == ".py" and (error := _breaks_python(text, new, path)):
            outcomes.append(
                Outcome(edit, "does not fit", path, f"the rewritten file is not valid Python: {error}")
            )
        else:
            texts[path] = new
            outcomes.append(Outcome(edit, "applied", path))
    return outcomes, texts


def read(path: Path) -> str:
    # Patterns are written for "\n"; a CRLF file is matched as LF and written back as CRLF.
    return path.read_bytes().decode("utf-8").replace("\r\n", "\n")


def write(path: Path, text: str) -> None:
    if b"\r\n" in path.read_bytes():
        text = text.replace("\n", "\r\n")
    path.write_bytes(text.encode("utf-8"))


def _breaks_python(before: str, after: str, path: Path) -> str | None:
    """The SyntaxError an edit introduced, if the file compiled before it."""

    def error(text: str) -> str | None:
        try:
            compile(text, str(path), "exec", dont_inherit=True)
        except SyntaxError as e:
            return f"line {e.lineno}: {e.msg}"
        return None

    return error(after) if error(before) is None else None


def load(fix: Path) -> list[Edit]:
    spec = importlib.util.spec_from_file_location(f"sparkctl_fix_{fix.stem.replace('-', '_')}", fix)
    if spec is None or spec.loader is None:
        raise SystemExit(f"srcfix: cannot load {fix}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    edits = getattr(module, "EDITS", None)
    if not isinstance(edits, list) or not all(isinstance(e, Edit) for e in edits) or not edits:
        raise SystemExit(f"srcfix: {fix} defines no EDITS list")
    return edits


def main(argv: list[str]) -> int:
    flags = {a for a in argv if a.startswith("--")}
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 2 or not flags <= {"--check", "--lenient"}:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    fix, root = Path(args[0]), Path(args[1])
    if not root.is_dir():
        print(f"srcfix: {root} is not a directory", file=sys.stderr)
        return 2
    name = fix.stem
    outcomes, texts = plan(root, load(fix))
    misfits = [o for o in outcomes if o.state == "does not fit"]
    abort = bool(misfits) and "--lenient" not in flags
    for o in outcomes:
        where = f" ({o.path.relative_to(root)})" if o.path else ""
        state = o.state
        if o.state == "in effect" and o.edit.pattern is None:
            state = "holds"  # a precondition
        elif o.state == "applied" and "--check" in flags:
            state = "would apply"
        elif o.state == "applied" and abort:
            state = "not written"
        line = f"{name}: {o.edit.what}: {state}{where}"
        if o.detail:
            line += f": {o.detail}"
        if o.state == "does not fit":
            line = ("warning: " if "--lenient" in flags else "error: ") + line
        print(line, file=sys.stderr)
    if "--check" in flags:
        return 1 if misfits or texts else 0
    if abort:
        print(f"{name}: nothing written: {len(misfits)} of {len(outcomes)} edits do not fit", file=sys.stderr)
        return 1
    for path, text in texts.items():
        write(path, text)
    return 0


if __name__ == "__main__":
    # The fixes say `from srcfix import Edit`: let them find this module, not a second copy.
    sys.modules.setdefault("srcfix", sys.modules[__name__])
    sys.exit(main(sys.argv[1:]))
