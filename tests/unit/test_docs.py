"""docs/ stays true: the catalog key table in docs/catalog.md is the catalog schema (regenerate
with `SPARKCTL_WRITE_DOCS=1 pytest tests/unit/test_docs.py`, which keeps the hand-written meaning
column), every `sparkctl …` command shown in docs/ parses against the real CLI, those that need no
Spark run, every Python snippet compiles and every JSON snippet parses."""

from __future__ import annotations

import json
import os
import re
import shlex
import typing
import warnings
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from sparkctl.catalog.spec import ModelSpec, json_schema
from sparkctl.cli import cli
from sparkctl.quantities import format_duration, format_size

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# A catalog key without a meaning in the table below: the doc test fails rather than ship a gap.
UNDOCUMENTED = "(no description yet)"
PAGES = sorted(DOCS.glob("*.md"))
BEGIN, END = (
    "<!-- catalog-keys:begin (generated: see tests/unit/test_docs.py) -->",
    "<!-- catalog-keys:end -->",
)


# ------------------------------------------------------------------------------ the key table
def _resolve(schema: dict[str, Any], prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A property schema without its `null` alternative (and whether it had one), refs followed."""
    nullable = False
    if "anyOf" in prop:
        options = [p for p in prop["anyOf"] if p.get("type") != "null"]
        nullable = len(options) < len(prop["anyOf"])
        prop = {**options[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
    if "$ref" in prop:
        prop = {
            **schema["$defs"][prop["$ref"].rsplit("/", 1)[1]],
            **{k: v for k, v in prop.items() if k != "$ref"},
        }
    return prop, nullable


def _type(schema: dict[str, Any], prop: dict[str, Any]) -> str:
    prop, _ = _resolve(schema, prop)
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    pattern = prop.get("pattern", "")
    if "never" in pattern:
        return 'duration, `"0"` or `"never"`'
    if "ms|s|m|h" in pattern:
        return "duration"
    if "bkmgt" in pattern:
        return "size"
    kind = prop.get("type")
    if kind == "array":
        items, _ = _resolve(schema, prop["items"])
        if items.get("type") == "object" and "properties" in items:
            return "list of {" + ", ".join(items["properties"]) + "}"
        inner = _type(schema, prop["items"])
        return "list of " + ({"string": "strings", "integer": "integers"}.get(inner, inner))
    if kind == "object":
        extra = prop.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("type") in ("string", "integer"):
            return f"table of {extra['type']}s"
        if isinstance(extra, dict) and extra.get("type") == "object":
            return "table of tables"
        return "table"
    return {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}.get(
        str(kind), str(kind)
    )


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}" if value else "{}"
    return str(value)


def _default(field: Any, prop: dict[str, Any], schema: dict[str, Any]) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, BaseModel):
        return "—"
    kind = _type(schema, prop)
    if kind.startswith("duration"):
        return f'`"{format_duration(value)}"`'
    if kind == "size":
        return f'`"{format_size(value)}"`'
    if hasattr(value, "value"):  # an enum member
        value = value.value
    return f"`{_toml(value)}`"


def catalog_key_rows() -> list[tuple[str, str, str]]:
    """(key, type, default) for every key of a catalog file, from the pydantic models."""
    schema = json_schema()
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str, props: dict[str, Any]) -> None:
        for name, field in model.model_fields.items():
            prop = props[name]
            annotation = field.annotation
            nested = next(
                (
                    a
                    for a in (annotation, *typing.get_args(annotation))
                    if isinstance(a, type) and issubclass(a, BaseModel)
                ),
                None,
            )
            if nested is not None and typing.get_origin(annotation) is not list:
                sub, _ = _resolve(schema, prop)
                walk(nested, f"{prefix}{name}.", sub["properties"])
                continue
            rows.append((f"{prefix}{name}", _type(schema, prop), _default(field, prop, schema)))

    walk(ModelSpec, "", schema["properties"])
    return rows


def _table_in_docs() -> tuple[str, list[list[str]]]:
    text = (DOCS / "catalog.md").read_text()
    assert BEGIN in text and END in text, "docs/catalog.md lost its generated-table markers"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    rows = []
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows.append(cells)
    return text, rows


def render_table(meanings: dict[str, str]) -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default in catalog_key_rows():
        lines.append(f"| `{key}` | {kind} | {default} | {meanings.get(key, UNDOCUMENTED)} |")
    return "\n".join(lines)


def test_the_catalog_key_table_is_the_schema() -> None:
    text, rows = _table_in_docs()
    meanings = {r[0].strip("`"): r[3] for r in rows if len(r) >= 4}
    expected = render_table(meanings)
    if os.environ.get("SPARKCTL_WRITE_DOCS") == "1":
        before, rest = text.split(BEGIN, 1)
        (DOCS / "catalog.md").write_text(
            before + BEGIN + "\n" + expected + "\n" + END + rest.split(END, 1)[1]
        )
        text, rows = _table_in_docs()
    assert [r[:3] for r in rows] == [[f"`{k}`", t, d] for k, t, d in catalog_key_rows()], (
        "docs/catalog.md's key table differs from the schema: run SPARKCTL_WRITE_DOCS=1 pytest tests/unit/test_docs.py"
    )
    missing = [r[0] for r in rows if len(r) < 4 or not r[3] or r[3] == UNDOCUMENTED]
    assert not missing, f"keys without a meaning in docs/catalog.md: {missing}"
    # The JSON schema shipped in docs/ is the same schema.
    assert json.loads((DOCS / "catalog.schema.json").read_text()) == json_schema()


# ------------------------------------------------------------------------------------ snippets
def _blocks(page: Path) -> list[tuple[str, str, int]]:
    """(language, code, line) of every fenced block."""
    out: list[tuple[str, str, int]] = []
    lang: str | None = None
    start = 0
    buf: list[str] = []
    for n, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, buf = line[3:].strip(), n, []
            else:
                out.append((lang, "\n".join(buf), start))
                lang = None
            continue
        if lang is not None:
            buf.append(line)
    return out


def _sparkctl_commands() -> list[tuple[str, list[str]]]:
    """Every `sparkctl …` line in a shell block of docs/*.md, as (where, argv after `sparkctl`)."""
    found = []
    for page in PAGES:
        for lang, code, start in _blocks(page):
            if lang not in ("sh", "bash", "console", "shell"):
                continue
            joined = code.replace("\\\n", " ")
            for offset, line in enumerate(joined.splitlines()):
                line = line.strip().removeprefix("$ ")
                for part in re.split(r"\s*(?:&&|\|\||;)\s*", line):
                    words = shlex.split(part, comments=True) if part else []
                    while words and (
                        words[0] == "sudo" or ("=" in words[0] and not words[0].startswith("-"))
                    ):
                        words = words[1:]  # sudo, and VAR=value prefixes
                    if words and words[0] in ("sparkctl", ".venv/bin/sparkctl"):
                        found.append((f"{page.name}:{start + offset + 1}", words[1:]))
    return found


def _rest(ctx: click.Context) -> list[str]:
    """The tokens a group left for its subcommand (click ≥ 8.2 is moving them into `args`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*getattr(ctx, "protected_args", []), *ctx.args]


def _parse(argv: list[str]) -> click.Command:
    """Parse argv with the real CLI as click would, without running anything; the leaf command."""
    ctx = cli.make_context("sparkctl", list(argv))
    command: click.Command = cli
    args = _rest(ctx)
    while isinstance(command, click.Group) and args:
        name, sub, rest = command.resolve_command(ctx, args)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
        args = _rest(ctx) if isinstance(sub, click.Group) else []
    return command


COMMANDS_IN_DOCS = _sparkctl_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS_IN_DOCS) > 20
    shown = {" ".join(argv[:1]) for _, argv in COMMANDS_IN_DOCS}
    assert {"doctor", "pull", "images", "install", "keys", "models", "logs"} <= shown


@pytest.mark.parametrize(("where", "argv"), COMMANDS_IN_DOCS, ids=[w for w, _ in COMMANDS_IN_DOCS])
def test_every_sparkctl_command_in_the_docs_parses(where: str, argv: list[str]) -> None:
    if argv in (["--help"], ["--version"]):
        return
    try:
        _parse(argv)
    except click.exceptions.Exit:
        pass  # --help inside a command line
    except click.UsageError as e:
        pytest.fail(f"{where}: `sparkctl {' '.join(argv)}` does not parse: {e.format_message()}")


# Commands that need no Spark, no daemon and write nothing outside a temporary directory.
SAFE = (
    ("--help",),
    ("models",),
    ("images", "list"),
    ("doctor",),
    ("preflight",),
    ("keys", "list"),
    ("render",),
)


# The others need a Spark, the daemon or root: they are parsed above, and run by the demo and the
# integration tests (install, ps, start, stop, logs, keys add, …) where they can run.
SAFE_COMMANDS = [(w, a) for w, a in COMMANDS_IN_DOCS if any(tuple(a[: len(s)]) == s for s in SAFE)]


@pytest.mark.parametrize(("where", "argv"), SAFE_COMMANDS, ids=[w for w, _ in SAFE_COMMANDS])
def test_the_safe_commands_in_the_docs_run(where: str, argv: list[str], tmp_path: Path) -> None:
    config = tmp_path / "sparkctl.toml"
    config.write_text(
        f'[gateway]\napi_keys_file = "{tmp_path / "api-keys"}"\n'
        f'[runtime]\nhf_cache = "{tmp_path / "hf"}"\n'
        f'[systemd]\nquadlet_dir = "{tmp_path / "quadlet"}"\nunit_dir = "{tmp_path / "units"}"\n'
    )
    argv = list(argv)
    if argv[0] == "render":  # never the configured unit directories, never a shared /tmp path
        if "--out" in argv:
            argv[argv.index("--out") + 1] = str(tmp_path / "out")
        else:
            argv += ["--out", str(tmp_path / "out")]
    args = ["--config", str(config), *argv]
    result = CliRunner().invoke(cli, args, env={"CONTAINER_HOST": "unix:///nonexistent.sock"})
    assert result.exception is None or isinstance(result.exception, SystemExit), (where, result.exception)
    assert result.exit_code in (0, 1), f"{where}: exit {result.exit_code}: {result.output}{result.stderr}"
    if result.exit_code == 1:  # a failure must be one of sparkctl's own, said plainly
        assert "error: " in result.stderr or argv[0] in ("doctor", "preflight"), (where, result.stderr)


def test_python_snippets_compile_and_json_snippets_parse() -> None:
    count = 0
    for page in PAGES:
        for lang, code, start in _blocks(page):
            if lang == "python":
                compile(code, f"{page.name}:{start}", "exec")
                count += 1
            elif lang == "json":
                json.loads(code)
                count += 1
    assert count >= 3
