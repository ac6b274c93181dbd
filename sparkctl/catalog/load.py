"""Reading catalog directories into one validated Catalog.

Directories are read in order and a later one replaces an earlier one's model with the same id
(an operator overrides a shipped model by dropping a file into /etc/sparkctl/models). Every
problem in every file is collected before failing, so one run shows them all.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from sparkctl.catalog import checks
from sparkctl.catalog.spec import ModelSpec
from sparkctl.errors import CatalogError, Issue, UnknownModelError
from sparkctl.settings import Settings
from sparkctl.validation import issues_from_validation, read_toml

# The one catalog convention beyond source.hf_repo that names weights: the
# fix-qwen3.5-chat-template entrypoint copies its chat template from this repo's snapshot in the
# shared cache at start, so `pull` fetches it and the start-time preflight requires it.
TEMPLATE_SOURCE_ENV = "QWEN35_CHAT_TEMPLATE_MODEL_ID"


@dataclass(frozen=True, slots=True)
class Model:
    """A catalog entry with everything that depends on the rest of the catalog resolved."""

    spec: ModelSpec
    file: Path
    host_port: int
    direct_port: int | None  # None: no socket of its own (direct_port = 0, or disabled)
    idle_timeout: float  # seconds; math.inf = never
    created: int  # the file's mtime when it was read: /v1/models' `created`, without a stat per request

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def chat_template_file(self) -> Path | None:
        name = self.spec.engine.chat_template
        return self.file.parent / name if name else None

    @property
    def extra_repos(self) -> list[str]:
        """Repos besides the model's own that must be in the cache before it starts."""
        repo = self.spec.engine.env.get(TEMPLATE_SOURCE_ENV)
        return [repo] if repo and repo != self.spec.source.hf_repo else []


@dataclass(frozen=True, slots=True)
class Catalog:
    models: dict[str, Model]  # by id, sorted
    aliases: dict[str, str]  # alias → id

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)

    @property
    def enabled(self) -> list[Model]:
        return [m for m in self.models.values() if m.spec.enabled]

    def resolve(self, name: str) -> Model:
        """The model a client's `model` value names (an id or an alias)."""
        model = self.models.get(name) or self.models.get(self.aliases.get(name, ""))
        if model is None:
            raise UnknownModelError(f"The model '{name}' does not exist.{self._did_you_mean(name)}")
        return model

    def _did_you_mean(self, name: str) -> str:
        """The close names (ids and aliases), case aside: a typo's likely meaning."""
        names = [*self.models, *self.aliases]
        lowered = {n.lower(): n for n in names}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
        if not close:
            return ""
        return " Did you mean " + " or ".join(f"'{lowered[c]}'" for c in close) + "?"


def read_specs(
    dirs: list[Path], *, required: set[Path] | None = None
) -> tuple[dict[str, tuple[ModelSpec, Path]], list[Issue]]:
    """Validate every `*.toml` in `dirs`, later dirs overriding earlier ones by id.

    A directory in `required` must exist; others (such as /etc/sparkctl/models on a fresh host)
    are skipped when missing.
    """
    issues: list[Issue] = []
    found: dict[str, tuple[ModelSpec, Path]] = {}
    for d in dirs:
        if not d.is_dir():
            if required is not None and d in required:
                issues.append(Issue(str(d), "", "not a directory"))
            continue
        in_this_dir: dict[str, Path] = {}
        for path in sorted(d.glob("*.toml")):
            spec, file_issues = read_spec(path)
            issues += file_issues
            if spec is None:
                continue
            if spec.id in in_this_dir:
                issues.append(Issue(str(path), "id", f"{spec.id!r} is also the id in {in_this_dir[spec.id]}"))
                continue
            in_this_dir[spec.id] = path
            found[spec.id] = (spec, path)
    return dict(sorted(found.items())), issues


def read_spec(path: Path) -> tuple[ModelSpec | None, list[Issue]]:
    data, issues = read_toml(path)
    if data is None:
        return None, issues
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as e:
        return None, issues_from_validation(path, ModelSpec, e)
    if path.stem != spec.id:
        return None, [Issue(str(path), "id", f"must equal the file name ({path.stem!r}), got {spec.id!r}")]
    template = spec.engine.chat_template
    if template is not None and not (path.parent / template).is_file():
        return None, [
            Issue(
                str(path),
                "engine.chat_template",
                f"no such file beside the catalog: {path.parent / template}",
            )
        ]
    return spec, []


def _mtime(path: Path) -> int:
    try:
        return int(path.stat().st_mtime)
    except OSError:  # gone since it was read: it was read now
        return int(time.time())


def load_catalog(settings: Settings, dirs: list[Path] | None = None) -> Catalog:
    """Load and cross-check the catalog; raise CatalogError listing every problem."""
    explicit = dirs is not None
    use = dirs if dirs is not None else list(settings.catalog.dirs)
    required = set(use) if explicit else {use[0]} if use else set()
    specs, issues = read_specs(use, required=required)
    issues += checks.cross_check(specs, settings)
    if issues:
        raise CatalogError(issues)
    host_ports, direct_ports, port_issues = checks.assign_ports(specs, settings)
    if port_issues:
        raise CatalogError(port_issues)
    models = {
        mid: Model(
            spec=spec,
            file=path,
            host_port=host_ports.get(mid, 0),
            direct_port=direct_ports.get(mid),
            idle_timeout=(
                spec.serve.idle_timeout
                if spec.serve.idle_timeout is not None
                else settings.scheduler.idle_timeout
            ),
            created=_mtime(path),
        )
        for mid, (spec, path) in specs.items()
    }
    aliases = {a: mid for mid, (spec, _) in specs.items() for a in spec.aliases}
    return Catalog(models=models, aliases=aliases)
