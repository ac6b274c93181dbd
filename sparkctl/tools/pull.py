"""`sparkctl pull ID`: put a model's weights and image on this host before its first start.

Weights go through huggingface_hub into the shared cache (`runtime.hf_cache`), laid out under
`hub/` exactly as the containers see it through HF_HOME, at the catalog's `source.revision`.
A pull is resumable: files that completed stay in the cache, a rerun fetches only the rest, and a
connection that drops mid-file is resumed by huggingface_hub with an HTTP Range request. Gated
models need a token, read from (first found) `$HF_TOKEN_FILE`, the systemd credential `hf-token`
(`$CREDENTIALS_DIRECTORY/hf-token`), `/etc/sparkctl/hf-token`, or `$HF_TOKEN`; never from a
user's own `huggingface-cli login`, because a pull into the shared cache should not depend on who
runs it.

The image is checked (and, for a pinned external image, pulled) through Podman's API with
podman-py; sparkctl's own `localhost/` images are built, not pulled (`sparkctl images build`).
Model units never pull at start (`Pull=never`): a missing piece fails the start fast instead, via
`sparkctl preflight`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sparkctl.core.weights import check_weights, hub_dir
from sparkctl.errors import ImageMissingError, PullError

if TYPE_CHECKING:
    from sparkctl.catalog import Model

TOKEN_FILE = Path("/etc/sparkctl/hf-token")
CREDENTIAL = "hf-token"

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    source: str  # where it came from, for messages (never the token itself)


AS_ROOT = "run as root (sudo sparkctl pull …)"


def find_token(
    env: Mapping[str, str] | None = None, default_file: Path = TOKEN_FILE, *, fix: str = AS_ROOT
) -> Token | None:
    """The Hugging Face token for gated models, from the first place that has one. `fix`: what
    to do about one that cannot be read (the daemon's pulls say something else than root's)."""
    env = os.environ if env is None else env
    candidates: list[tuple[Path, str, bool]] = []
    if env.get("HF_TOKEN_FILE"):
        candidates.append((Path(env["HF_TOKEN_FILE"]), "$HF_TOKEN_FILE", True))
    if env.get("CREDENTIALS_DIRECTORY"):
        path = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL
        candidates.append((path, f"systemd credential {CREDENTIAL}", False))
    candidates.append((default_file, str(default_file), False))
    for path, source, explicit in candidates:
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            if explicit:
                raise PullError(f"$HF_TOKEN_FILE names {path}, which does not exist") from None
            continue
        except PermissionError:
            raise PullError(f"cannot read the Hugging Face token in {path}: {fix}") from None
        except OSError as e:
            raise PullError(f"cannot read the Hugging Face token in {path}: {e.strerror}") from None
        if value:
            return Token(value, f"{source} ({path})")
        if explicit:
            raise PullError(f"{path} ($HF_TOKEN_FILE) is empty")
    if env.get("HF_TOKEN"):
        return Token(env["HF_TOKEN"].strip(), "$HF_TOKEN")
    return None


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class WeightsResult:
    repo: str
    revision: str
    commit: str
    snapshot: Path
    downloaded: int  # bytes that were missing before this pull


@dataclass(frozen=True, slots=True)
class _Fetch:
    """One repository at one revision, and where and how to fetch it."""

    repo: str
    revision: str
    hub: Path
    endpoint: str | None
    token: Token | None

    @property
    def where(self) -> str:
        return f"{self.repo}@{self.revision}"

    @property
    def server(self) -> str:
        return self.endpoint or "the Hugging Face Hub"

    @property
    def secret(self) -> str | bool:
        # False, not None: without a sparkctl token no token at all is sent (see the module docstring).
        return self.token.value if self.token else False


def pull_weights(
    repo: str,
    revision: str,
    hf_cache: Path,
    *,
    model_id: str,
    token: Token | None,
    endpoint: str | None = None,
    say: Say = lambda _line: None,
) -> WeightsResult:
    """Download `repo`@`revision` into `hf_cache`/hub (what is already there is kept)."""
    # The Hub client reads HF_ENDPOINT once, at import; read it here so it can change per call.
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    hub = hub_dir(hf_cache)
    _writable(hub)
    fetch = _Fetch(repo, revision, hub, endpoint, token)
    # What a pull writes stays readable to every engine and writable to the cache's group, so a
    # pull root began the daemon can finish, and the other way round (#15: the daemon pulls for
    # other nodes of a cluster; the cache is root's and the daemon's group's, setgid).
    umask = os.umask(0o002)
    try:
        commit, missing, path = _download(fetch, say)
    except PullError:
        raise
    except Exception as e:
        raise _failure(e, fetch, model_id) from None
    finally:
        os.umask(umask)
    state = check_weights(hf_cache, repo, revision)
    if not state.present:
        raise PullError(f"{fetch.where} is still incomplete after the download: {state.reason}")
    return WeightsResult(repo, revision, commit, Path(path), missing)


def _download(fetch: _Fetch, say: Say) -> tuple[str, int, str]:
    """Resolve the revision, check the disk, fetch what is missing: (commit, bytes missing, snapshot)."""
    from huggingface_hub import snapshot_download

    commit, missing = _plan(fetch, say)
    # A branch or tag resolves to this commit from now on (preflight reads it), as
    # huggingface_hub records it; the download is then pinned to the commit itself.
    if commit != fetch.revision:
        _write_ref(fetch.hub, fetch.repo, fetch.revision, commit)
    path = snapshot_download(
        fetch.repo,
        revision=commit,
        cache_dir=fetch.hub,
        token=fetch.secret,
        endpoint=fetch.endpoint,
    )
    return commit, missing, path


def _plan(fetch: _Fetch, say: Say) -> tuple[str, int]:
    """The commit the revision names and the bytes still to download, refused if they do not fit."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=fetch.endpoint, token=fetch.secret)
    info = api.model_info(fetch.repo, revision=fetch.revision, files_metadata=True)
    commit = str(info.sha)
    sizes = {s.rfilename: (s.lfs.size if s.lfs else s.size) or 0 for s in info.siblings or []}
    total = sum(sizes.values())
    missing = _missing_bytes(fetch.hub, fetch.repo, commit, sizes)
    free = shutil.disk_usage(fetch.hub).free
    say(
        f"{fetch.where} is commit {commit[:12]}: {len(sizes)} files, {human_bytes(total)}; "
        f"{human_bytes(missing)} to download, {human_bytes(free)} free in {fetch.hub}"
    )
    if missing > free:
        raise PullError(
            f"{fetch.where} needs {human_bytes(missing)} more but {fetch.hub} has {human_bytes(free)} free",
            hint="free space (`sparkctl doctor` shows the cache's disk) or move runtime.hf_cache",
        )
    return commit, missing


def _failure(e: Exception, fetch: _Fetch, model_id: str) -> PullError:
    """What a failed fetch means to the user. The order of the checks matters, because the Hub's
    errors nest: a gated repository is a kind of missing one, and every one of them is an OSError."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(e, GatedRepoError):
        return _gated(fetch)
    if isinstance(e, RevisionNotFoundError):
        return PullError(
            f"revision {fetch.revision!r} does not exist in {fetch.repo}",
            hint=f"fix source.revision of {model_id} in its catalog file (a branch, tag or commit)",
        )
    if isinstance(e, RepositoryNotFoundError):
        return PullError(
            f"{fetch.repo} was not found on {fetch.server}"
            + ("" if fetch.token else " (a private repository needs a token: see `sparkctl pull --help`)"),
        )
    return _transfer_failure(e, fetch)


def _gated(fetch: _Fetch) -> PullError:
    repo, token = fetch.repo, fetch.token
    return PullError(
        f"{repo} is gated: "
        + (
            f"the token from {token.source} was refused; accept the model's terms at "
            f"https://huggingface.co/{repo} with the account the token belongs to"
            if token
            else f"accept its terms at https://huggingface.co/{repo}, then put a read token in "
            f"{TOKEN_FILE} (mode 0600) or point $HF_TOKEN_FILE at one"
        ),
    )


def _transfer_failure(e: Exception, fetch: _Fetch) -> PullError:
    """A fetch that broke off: the Hub unreachable, an HTTP error, the disk, the connection."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    where = fetch.where
    if isinstance(e, LocalEntryNotFoundError):
        return PullError(
            f"could not reach {fetch.server} to fetch {where}: {_first_line(e)}",
            hint="what was already downloaded stays in the cache; run the same pull again to continue",
        )
    if isinstance(e, HfHubHTTPError):
        return PullError(f"{where}: {_first_line(e)}", hint="run the same pull again to continue")
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return PullError(f"the disk holding {fetch.hub} is full while fetching {where}")
    if isinstance(e, OSError):
        return PullError(
            f"fetching {where} failed: {_first_line(e)}",
            hint="completed files stay in the cache; run the same pull again to continue",
        )
    # The HTTP client's own errors (connection refused, TLS, timeouts).
    return PullError(
        f"could not fetch {where} from {fetch.server}: {_first_line(e)}",
        hint="completed files stay in the cache; run the same pull again to continue",
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _writable(hub: Path) -> None:
    try:
        hub.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise PullError(f"cannot create {hub}: run as root (sudo sparkctl pull …)") from None
    if not os.access(hub, os.W_OK):
        raise PullError(f"{hub} is not writable: run as root (sudo sparkctl pull …)")


def _missing_bytes(hub: Path, repo: str, commit: str, sizes: Mapping[str, int]) -> int:
    snapshot = hub / ("models--" + repo.replace("/", "--")) / "snapshots" / commit
    return sum(size for name, size in sizes.items() if not (snapshot / name).exists())


def _write_ref(hub: Path, repo: str, revision: str, commit: str) -> None:
    ref = hub / ("models--" + repo.replace("/", "--")) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    if not ref.exists() or ref.read_text().strip() != commit:
        tmp = ref.with_name(ref.name + ".sparkctl-tmp")
        tmp.write_text(commit)
        tmp.replace(ref)


# ------------------------------------------------------------------------------------------ image
def ensure_image(image: str, *, say: Say, pull: bool = True, system: bool = True) -> str:
    """Make sure `image` is in Podman's store: "present", "pulled", or ImageMissingError."""
    from sparkctl.tools.images import podman_client

    with podman_client(system=system) as client:
        if client.images.exists(image):
            return "present"
        if image.startswith("localhost/"):
            raise ImageMissingError(
                f"image {image} is not built on this host",
                hint=f"sparkctl images build {image}",
            )
        if not pull:
            raise ImageMissingError(
                f"image {image} is not on this host", hint=f"sparkctl pull (or podman pull {image})"
            )
        say(f"pulling {image}")
        from podman.errors import APIError

        try:
            for line in client.images.pull(image, stream=True, decode=True):
                if isinstance(line, dict):
                    if line.get("error"):
                        raise ImageMissingError(
                            f"pulling {image} failed: {line['error']}", hint=_pull_hint(image)
                        )
                    text = str(line.get("stream") or line.get("status") or "").strip()
                    if text:
                        say(text)
        except APIError as e:
            raise ImageMissingError(f"pulling {image} failed: {e}", hint=_pull_hint(image)) from None
        if not client.images.exists(image):
            raise ImageMissingError(f"pulled {image}, but Podman does not find it afterwards")
        return "pulled"


def _pull_hint(image: str) -> str:
    if image.startswith("nvcr.io/"):
        return (
            "NGC may need a login: sudo podman login nvcr.io (user $oauthtoken, an NGC API key as password)"
        )
    return "check the network and the registry, then run the pull again"


def pull_model(
    model: Model,
    hf_cache: Path,
    *,
    say: Say,
    weights: bool = True,
    image: bool = True,
    env: Mapping[str, str] | None = None,
    system: bool = True,
) -> None:
    spec = model.spec
    if weights:
        if spec.source.hf_repo.startswith("/"):
            state = check_weights(hf_cache, spec.source.hf_repo)
            if not state.present:
                raise PullError(
                    f"{model.id} serves the local directory {spec.source.hf_repo}: {state.reason}"
                )
            say(f"{model.id}: weights are the local directory {spec.source.hf_repo}")
        else:
            token = find_token(env)
            if token:
                say(f"using the Hugging Face token from {token.source}")
            result = pull_weights(
                spec.source.hf_repo,
                spec.source.revision,
                hf_cache,
                model_id=model.id,
                token=token,
                say=say,
            )
            say(f"{model.id}: weights ready in {result.snapshot}")
            for repo in model.extra_repos:
                say(f"{model.id} takes its chat template from {repo}: fetching it too")
                pull_weights(repo, "main", hf_cache, model_id=model.id, token=token, say=say)
    if image and spec.engine.runtime == "container" and spec.engine.image:
        outcome = ensure_image(spec.engine.image, say=say, system=system)
        say(f"{model.id}: image {spec.engine.image} {outcome}")


# ------------------------------------------------------------------------------ a daemon's pull
# A node's daemon pulls a spanning model's weights on another node's request (#15,
# gateway/pulls.py) in a child process: `python -m sparkctl.tools.pull --model ID --hf-cache DIR
# --repo REPO --revision REV [--extra REPO]…`, every value the daemon's own catalog and settings
# (never the request's). Progress goes to stderr a line at a time; the outcome is one JSON line
# on stdout, `{"ok": true}` or `{"ok": false, "message", "hint"}`; the exit status says the same.
# A child, not a thread: a download of 100 GB must neither hold the gateway's interpreter nor
# keep the daemon from stopping (SIGTERM ends it; what it finished stays in the cache).
TICK = 10.0  # seconds between "so far" lines while files download
DAEMON_TOKEN_FIX = "run `sudo sparkctl install` on this node again: it gives the file to the daemon's group"


def _blob_bytes(hf_cache: Path, repo: str) -> int:
    from sparkctl.core.weights import repo_dir

    blobs = repo_dir(hf_cache, repo) / "blobs"
    total = 0
    try:
        for entry in os.scandir(blobs):
            with contextlib.suppress(OSError):
                total += entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 0
    return total


def _ticking(hf_cache: Path, repo: str, say: Say, every: float) -> Callable[[], None]:
    """Say how much of `repo` is in the cache every `every` seconds until the returned stop()."""
    stop = threading.Event()
    start = _blob_bytes(hf_cache, repo)

    def tick() -> None:
        while not stop.wait(every):
            say(f"{repo}: {human_bytes(_blob_bytes(hf_cache, repo) - start)} fetched so far")

    thread = threading.Thread(target=tick, name="sparkctl-pull-tick", daemon=True)
    thread.start()

    def stopped() -> None:
        stop.set()
        thread.join()

    return stopped


def child_main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m sparkctl.tools.pull")
    parser.add_argument("--model", required=True)
    parser.add_argument("--hf-cache", type=Path, required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--tick", type=float, default=TICK)
    args = parser.parse_args(argv)
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # a bar redrawn with \r is no log line
    # Whatever else huggingface_hub keeps (its xet chunk cache, say) goes into the cache too: the
    # daemon's home is not writable (ProtectSystem=strict), the cache is.
    os.environ["HF_HOME"] = str(args.hf_cache)
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        token = find_token(fix=DAEMON_TOKEN_FIX)
        if token:
            say(f"using the Hugging Face token from {token.source}")
        for repo, revision in [(args.repo, args.revision), *((r, "main") for r in args.extra)]:
            stop = _ticking(args.hf_cache, repo, say, args.tick)
            try:
                result = pull_weights(
                    repo, revision, args.hf_cache, model_id=args.model, token=token, say=say
                )
            finally:
                stop()
            say(f"{args.model}: weights of {repo}@{revision} ready in {result.snapshot}")
    except PullError as e:
        print(json.dumps({"ok": False, "message": e.message, "hint": e.hint}), flush=True)
        return 1
    print(json.dumps({"ok": True}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
