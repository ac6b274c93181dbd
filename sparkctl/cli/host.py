"""Commands for the Spark itself: `images build|list`, `pull`, `doctor`, and `preflight` (the
start-time check a model unit runs before its engine).

Heavy modules (podman-py, huggingface_hub, the catalog) are imported inside the commands, so
`sparkctl --help` and `sparkctl preflight`, which runs at every model start, stay quick.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sparkctl.cli.app import admin_command, fail
from sparkctl.cli.output import emit_json, print_table
from sparkctl.errors import PodmanUnavailableError, SparkError

if TYPE_CHECKING:
    from sparkctl.catalog import Model
    from sparkctl.cli.app import Context
    from sparkctl.tools.images.rows import ImageRow


def _say(line: str) -> None:
    click.echo(line, err=True)


def _parse_build_args(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, arg = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {value!r}")
        out[name] = arg
    return out


_index_option = click.option(
    "--index",
    "index_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Another image index than containerfiles/index.toml (its directory is the build context).",
)


# ------------------------------------------------------------------------------------------ images
@click.group("images")
def images() -> None:
    """sparkctl's own container images (the localhost/… tags the catalog names)."""


@images.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array on stdout.")
@_index_option
@click.pass_obj
def images_list(ctx: Context, as_json: bool, index_path: Path | None) -> None:
    """Every image the enabled catalog needs: built here or pinned, present or missing."""
    from sparkctl.tools import images as imaging

    index = imaging.load_index(index_path)
    catalog = ctx.catalog()
    try:
        with imaging.podman_client(system=ctx.settings.systemd.bus == "system") as client:
            rows = imaging.image_rows(catalog, index, client)
    except PodmanUnavailableError as e:
        _say(f"note: states are unknown: {e.message}" + (f" ({e.hint})" if e.hint else ""))
        rows = imaging.image_rows(catalog, index, None)
    except SparkError:
        raise
    if ctx.settings.cluster.enabled:
        _images_per_node(ctx, rows, as_json=as_json)
        return
    if as_json:
        emit_json([r.to_json() for r in rows])
        return
    print_table(
        ["IMAGE", "SOURCE", "STATE", "MODELS", "NOTE"],
        [[r.image, r.source, r.state, str(len(r.models)), r.note] for r in rows],
        wrap={"NOTE"},
    )


def _images_per_node(ctx: Context, rows: list[ImageRow], *, as_json: bool) -> None:
    """In a cluster (#15): a NODE column, every node's images."""
    from sparkctl.tools.cluster import images_everywhere

    table = images_everywhere(ctx.settings, rows, say=_say)
    if as_json:
        emit_json(table)
        return
    print_table(
        ["NODE", "IMAGE", "SOURCE", "STATE", "MODELS", "NOTE"],
        [
            [
                r["node"],
                r["image"],
                r["source"] or "-",
                r["state"],
                str(len(r["models"])),
                r["note"],
            ]
            for r in table
        ],
        wrap={"NOTE"},
    )


@images.command("build")
@click.argument("tags", nargs=-1)
@click.option(
    "--build-arg",
    "build_args",
    multiple=True,
    callback=_parse_build_args,
    metavar="NAME=VALUE",
    help="A build argument, for every image that declares NAME (repeatable).",
)
@click.option("--no-cache", is_flag=True, help="Do not reuse cached build layers.")
@_index_option
@click.pass_obj
def images_build(
    ctx: Context, tags: tuple[str, ...], build_args: dict[str, str], no_cache: bool, index_path: Path | None
) -> None:
    """Build images (tags or index names; default: every missing one the catalog needs), with
    the sparkctl images they are built on first. Needs Podman and its API socket (root)."""
    from sparkctl.tools import images as imaging

    index = imaging.load_index(index_path)
    imaging.check_can_build(_say)
    with imaging.podman_client(system=ctx.settings.systemd.bus == "system") as client:
        if tags:
            wanted = [index.find(t) for t in tags]
        else:
            needed = imaging.catalog_images(ctx.catalog())
            wanted = [
                img
                for tag in needed
                if (img := index.by_tag(tag)) is not None and not client.images.exists(tag)
            ]
            wanted = list(dict.fromkeys(wanted))
            if not wanted:
                click.echo("every image the catalog needs is here")
                return
        order = [
            img
            for img in index.build_order(wanted)
            if img in wanted or not all(client.images.exists(t) for t in img.tags)
        ]
        blocked = {img.tags[0]: img.missing_inputs(build_args) for img in order}
        blocked = {tag: missing for tag, missing in blocked.items() if missing}
        if blocked:
            for tag, missing in blocked.items():
                _say(f"{tag} needs " + "; ".join(missing))

            raise SparkError(
                f"{len(blocked)} image{'s' if len(blocked) != 1 else ''} cannot be built yet "
                "(nothing was built)",
                hint="the index names each input; its Containerfile's comments say what it is for",
            )
        for img in order:
            imaging.build(img, client, say=_say, overrides=build_args, no_cache=no_cache)
    click.echo(
        f"built {len(order)} image{'s' if len(order) != 1 else ''}: " + ", ".join(i.tags[0] for i in order)
    )


# -------------------------------------------------------------------------------------------- pull
@click.command("pull")
@click.argument("model_ids", nargs=-1, required=True)
@click.option("--no-image", is_flag=True, help="Only the weights.")
@click.option("--no-weights", is_flag=True, help="Only the image.")
@click.pass_obj
def pull(ctx: Context, model_ids: tuple[str, ...], no_image: bool, no_weights: bool) -> None:
    """Fetch models' weights into the shared HF cache (resumable, at the catalog's revision) and
    make sure their images are here. Gated models need a token: $HF_TOKEN_FILE, the systemd
    credential hf-token, /etc/sparkctl/hf-token or $HF_TOKEN. A model that spans nodes
    (serve.nodes > 1) is pulled on every node it spans at once: each other node's daemon fetches
    its weights itself (with the admin key [cluster] peers holds for it) and says which image it
    still lacks."""
    from sparkctl.tools.cluster import pull_everywhere
    from sparkctl.tools.pull import pull_model

    catalog = ctx.catalog()
    models = [catalog.resolve(m) for m in model_ids]  # every id is checked before anything is fetched
    for model in models:
        if not model.spec.enabled:
            _say(f"note: {model.id} is disabled ({model.spec.disabled_reason}); fetching it anyway")

        def here(say: Callable[[str], None], model: Model = model) -> None:
            pull_model(
                model,
                ctx.settings.runtime.hf_cache,
                say=say,
                weights=not no_weights,
                image=not no_image,
                system=ctx.settings.systemd.bus == "system",
            )

        try:
            if model.spec.serve.nodes > 1 and not no_weights:
                problems = pull_everywhere(model, ctx.settings, local=here, say=_say, image=not no_image)
                if problems:
                    for line in problems[:-1]:
                        click.echo(f"error: {line}", err=True)
                    fail(problems[-1])
            else:
                here(_say)
        except KeyboardInterrupt:
            fail(
                f"{model.id}: interrupted; finished files stay in the cache (and other nodes' pulls go on "
                "there): run the same pull to continue"
            )
        click.echo(f"{model.id}: ready")


# ------------------------------------------------------------------------------------------ doctor
_MARKS = {"pass": ("PASS", "green"), "warn": ("WARN", "yellow"), "fail": ("FAIL", "red")}


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of checks on stdout.")
@click.pass_obj
@admin_command
def doctor(ctx: Context, as_json: bool) -> None:
    """Check this host for sparkctl: systemd, cgroups, Podman and Quadlet, the GPU (CDI, driver),
    memory, disk, the port, API keys, polkit and the socket; each failure with its fix. Next to
    a running demo (as root), the demo's sandbox and service are checked instead."""
    import sys

    from sparkctl.tools.doctor import run_checks

    checks = run_checks(ctx.settings, demo=ctx.in_demo)
    if as_json:
        emit_json([c.to_json() for c in checks])
    else:
        width = max(len(c.name) for c in checks)
        tty = sys.stdout.isatty()
        for c in checks:
            mark, color = _MARKS[c.status]
            click.echo(
                f"{click.style(mark, fg=color, bold=True) if tty else mark}  {c.name:<{width}}  {c.detail}"
            )
            if c.fix:
                click.echo(f"      {'':<{width}}  fix: {c.fix}")
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    passed = len(checks) - failed - warned
    _say(f"{failed} failed, {warned} warning{'s' if warned != 1 else ''}, {passed} passed")
    if failed:
        sys.exit(1)


# --------------------------------------------------------------------------------------- preflight
@click.command("preflight")
@click.option("--model", "model_id", required=True, help="The model's id (named in the message).")
@click.option("--hf-cache", type=click.Path(path_type=Path), required=True, help="runtime.hf_cache.")
@click.option("--repo", required=True, help="source.hf_repo (or a local directory).")
@click.option("--revision", default="main", show_default=True, help="source.revision.")
@click.option("--image", default=None, help="The container image, checked with `podman image exists`.")
@click.option(
    "--require",
    "required",
    multiple=True,
    metavar="REPO[@REV]",
    help="Another repo that must be in the cache (e.g. a chat-template source); repeatable.",
)
def preflight(
    model_id: str, hf_cache: Path, repo: str, revision: str, image: str | None, required: tuple[str, ...]
) -> None:
    """Exit 0 when a model's weights (and image) are here, else say what to run and exit 1:
    the check a model unit runs before it starts its engine, so a start fails in milliseconds
    instead of downloading or timing out."""
    from sparkctl.core.preflight import lacks

    for lack in lacks(model_id, hf_cache, repo, revision, image, required)[:1]:
        if lack.detail:
            click.echo(f"preflight: {lack.detail}", err=True)
        fail(lack.message)


COMMANDS: list[click.Command] = [images, pull, doctor, preflight]
