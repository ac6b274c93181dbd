"""API keys (BRIEF §4.2, §4.4): the key file `sparkctl keys` edits and the daemon reads.

The file is JSON, `{"version": 1, "keys": [{"name", "scope", "sha256", "created"}]}`, holding
only digests: a key is shown once, by `keys add`, and can never be read back. The CLI edits the
file in place and the daemon notices by itself (KeyFile), so adding or revoking a key needs no
restart and no connection to the daemon.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from .errors import InvalidFilesError, Issue, SparkError
from .units import write_atomic

log = logging.getLogger("sparkctl.keys")

KEY_PREFIX = "sk-spark-"
FILE_VERSION = 1
# Readable by the daemon's group, never by everyone: the digests are not secrets in the way the
# keys are, but there is no reason to hand them out.
FILE_MODE = 0o640
# The group sparkctl.service runs as (units/sparkctl.service, Group=). A key file sparkctl
# creates is given to it, so the daemon can read a file `sudo sparkctl keys add` just made.
DAEMON_GROUP = "sparkctl"
# Matched with fullmatch: `$` would let a trailing newline through.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
Scope = Literal["admin", "user"]
SCOPES: tuple[Scope, ...] = ("admin", "user")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_ENTRY_FIELDS = ("name", "scope", "sha256", "created")
_TOP_FIELDS = ("version", "keys")


class KeyFileError(InvalidFilesError):
    """The key file cannot be read or is not a valid key file; one Issue per problem."""

    code = "api_keys_invalid"

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues, what="invalid API key file")


class KeyFileWriteError(SparkError):
    code = "api_keys_write_failed"


class KeyExistsError(SparkError):
    code = "key_exists"


class KeyNotFoundError(SparkError):
    code = "key_not_found"


class InvalidKeyNameError(SparkError):
    code = "invalid_key_name"


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidKeyNameError(
            f"invalid key name {name!r}: 1 to 64 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


def new_key() -> str:
    # 32 random bytes, 43 URL-safe base64 characters: 256 bits of entropy.
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of a key. A plain SHA-256 is enough, and a slow KDF (bcrypt, argon2) would
    buy nothing: those exist to make guessing *low-entropy* passwords from a leaked hash costly,
    while these keys are 256 random bits, which no number of guesses reaches. A fast hash also
    keeps checking a key on every request cheap."""
    # surrogatepass: a header value may hold anything; hashing must never raise on it.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyEntry:
    name: str
    scope: Scope
    sha256: str
    created: str  # ISO-8601, UTC

    @property
    def admin(self) -> bool:
        return self.scope == "admin"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "scope": self.scope, "sha256": self.sha256, "created": self.created}


class KeyStore:
    """The keys of one key file, in the order they were added."""

    def __init__(self, entries: list[KeyEntry] | None = None) -> None:
        self._entries: list[KeyEntry] = list(entries or [])

    @classmethod
    def load(cls, path: Path) -> KeyStore:
        """The keys in `path`; a missing file holds no keys. Anything else wrong is a KeyFileError."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except UnicodeDecodeError as e:
            raise KeyFileError(
                [Issue(str(path), "", f"not UTF-8 text ({e.reason} at byte {e.start})")]
            ) from None
        except OSError as e:
            raise KeyFileError([Issue(str(path), "", f"cannot read: {e.strerror or e}")]) from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str) -> KeyStore:
        """Keys from the file's text; `source` names the file in errors."""
        if not text.strip():
            # An empty file is most likely a mistake (a truncated copy); never read it as "no keys".
            raise KeyFileError([Issue(source, "", "empty file (delete it to have no keys)")])
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise KeyFileError(
                [Issue(source, "", f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})")]
            ) from None
        return cls(_entries_from(data, source))

    def dumps(self) -> str:
        data = {"version": FILE_VERSION, "keys": [e.to_json() for e in self._entries]}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    def save(self, path: Path) -> None:
        """Write the file atomically, keeping the mode, owner and group of the one it replaces:
        the daemon reads it through its group, which a rewrite by root must not take away."""
        try:
            old: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            old = None
        except OSError as e:
            raise _write_error(path, e) from None
        try:
            write_atomic(path, self.dumps(), stat.S_IMODE(old.st_mode) if old else FILE_MODE)
        except OSError as e:
            raise _write_error(path, e) from None
        if old is not None:
            _restore_owner(path, old)
        else:
            _give_to_daemon_group(path)

    def entries(self) -> tuple[KeyEntry, ...]:
        return tuple(self._entries)

    def get(self, name: str) -> KeyEntry | None:
        return next((e for e in self._entries if e.name == name), None)

    def add(self, name: str, admin: bool = False) -> str:
        """Create a key named `name`; returns the key itself, which is stored only as a digest."""
        check_name(name)
        if self.get(name) is not None:
            raise KeyExistsError(
                f"a key named {name!r} already exists", hint=f"revoke it first: sparkctl keys revoke {name}"
            )
        key = new_key()
        created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        self._entries.append(KeyEntry(name, "admin" if admin else "user", hash_key(key), created))
        return key

    def revoke(self, name: str) -> KeyEntry:
        entry = self.get(name)
        if entry is None:
            raise KeyNotFoundError(f"no key named {name!r}", hint="see: sparkctl keys list")
        self._entries.remove(entry)
        return entry

    def authenticate(self, presented: str | None) -> KeyEntry | None:
        """The entry whose key was presented, or None."""
        if not presented:
            return None
        digest = hash_key(presented)
        found: KeyEntry | None = None
        # Every entry is compared, with no early exit, so the time taken does not tell which entry
        # (or whether any) matched. What is compared are digests of the caller's own input, so even
        # a leak would only reveal digest bytes, useless without a SHA-256 preimage; constant time
        # is defence in depth.
        for entry in self._entries:
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found

    def __len__(self) -> int:
        return len(self._entries)


@contextmanager
def edit(path: Path, *, create_dir: bool = False) -> Iterator[KeyStore]:
    """Load, change, save: the store yielded is written back if it changed and the block did not
    raise. Edits are serialized by a lock on the file's directory, so two `sparkctl keys add` at
    once cannot lose a key (both would otherwise load the same file and the second save wins)."""
    if create_dir:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _write_error(path.parent, e) from None
    with _locked(path.parent):
        store = KeyStore.load(path)
        before = store.entries()
        yield store
        if store.entries() != before:
            store.save(path)


class KeyFile:
    """The daemon's view of the key file, re-read when the file changes.

    `authenticate` looks at the file at most once per `interval` (one `os.stat`, cheap enough to do
    inline on the event loop) and reloads it when its signature changed, so `sparkctl keys add`
    and `revoke` take effect within a second, without a restart or a signal. A file that turns
    invalid is logged and the last good keys stay in force: a half-edited file must not lock
    every client out. A file that disappears holds no keys, as at startup.
    """

    def __init__(
        self, path: Path, *, interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._interval = interval
        self._clock = clock
        # The signature is taken before reading: a write between the two then shows as a change at
        # the next check and is read again, never missed.
        self._signature = _signature(path)
        # At startup an invalid file is an error, not "no keys": the daemon refuses to start.
        self._store = KeyStore.load(path)
        self._checked = clock()
        if not len(self._store):
            log.warning("no API keys in %s; create one with: sparkctl keys add NAME", path)

    @property
    def store(self) -> KeyStore:
        return self._store

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed (and, unless `force`, the interval has passed since the
        last look); True when new keys were loaded."""
        now = self._clock()
        if not force and now - self._checked < self._interval:
            return False
        self._checked = now
        signature = _signature(self.path)
        if signature == self._signature:
            return False
        # Remembered even if the read fails: the error is logged once per change of the file, not
        # once a second, and the next write (or chmod) is read again.
        self._signature = signature
        try:
            store = KeyStore.load(self.path)
        except SparkError as e:
            log.error("%s; keeping the %d keys loaded before", e, len(self._store))
            return False
        self._store = store
        log.info("reloaded %s: %d keys", self.path, len(store))
        return True

    def authenticate(self, presented: str | None) -> KeyEntry | None:
        self.refresh()
        return self._store.authenticate(presented)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: `Authorization: Bearer KEY` (OpenAI style; the scheme is case
    insensitive) or else `x-api-key: KEY` (Anthropic style, as `/v1/messages` clients send it)."""
    authorization = _header(headers, "Authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            return token
    api_key = _header(headers, "x-api-key")
    if api_key is not None and api_key.strip():
        return api_key.strip()
    return None


# ------------------------------------------------------------------------------------- internals


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # aiohttp's headers are case-insensitive already (the fast path); a plain dict is not.
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """What tells a changed file apart: inode (every atomic write is a new file), mtime and size
    (an editor writing in place), and ctime (a chmod or chown that makes the file readable
    changes nothing else). None when the file does not exist, or cannot be looked at."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns)


def _entries_from(data: Any, source: str) -> list[KeyEntry]:
    if not isinstance(data, dict):
        raise KeyFileError([Issue(source, "", 'must be a JSON object with "version" and "keys"')])
    issues: list[Issue] = [
        Issue(source, k, f"unknown key (allowed: {', '.join(sorted(_TOP_FIELDS))})")
        for k in data
        if k not in _TOP_FIELDS
    ]
    version = data.get("version")
    # `type(...) is int`: JSON true would otherwise pass as 1.
    if type(version) is not int or version != FILE_VERSION:
        got = "missing" if "version" not in data else f"got {json.dumps(version)}"
        issues.append(Issue(source, "version", f"must be {FILE_VERSION} ({got})"))
        # Another version is another format: reading its keys as version 1 would only mislead.
        raise KeyFileError(issues)
    raw = data.get("keys")
    if not isinstance(raw, list):
        got = "missing" if "keys" not in data else f"got {_json_type(raw)}"
        raise KeyFileError([*issues, Issue(source, "keys", f"must be a list ({got})")])
    entries: list[KeyEntry] = []
    names: dict[str, int] = {}
    digests: dict[str, int] = {}

    def bad(field: str, message: str) -> None:
        issues.append(Issue(source, field, message))

    for i, item in enumerate(raw):
        at = f"keys[{i}]"
        if not isinstance(item, dict):
            bad(at, f"must be an object (got {_json_type(item)})")
            continue
        n = len(issues)
        for k in item:
            if k not in _ENTRY_FIELDS:
                bad(f"{at}.{k}", f"unknown key (allowed: {', '.join(_ENTRY_FIELDS)})")
        for k in _ENTRY_FIELDS:
            if k not in item:
                bad(f"{at}.{k}", "missing")
        name, scope, digest, created = (item.get(k) for k in _ENTRY_FIELDS)
        if "name" in item:
            if not isinstance(name, str) or not NAME_RE.fullmatch(name):
                bad(f"{at}.name", f"invalid name {json.dumps(name)} (A-Z a-z 0-9 . _ -, ≤ 64)")
            elif name in names:
                bad(f"{at}.name", f"duplicate name {name!r} (also keys[{names[name]}])")
            else:
                names[name] = i
        if "scope" in item and scope not in SCOPES:
            bad(f"{at}.scope", f'must be "admin" or "user" (got {json.dumps(scope)})')
        if "sha256" in item:
            if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest):
                bad(f"{at}.sha256", "must be 64 lowercase hex digits")
            elif digest in digests:
                # One key, two entries: which name and scope it carries would be ambiguous.
                bad(f"{at}.sha256", f"same digest as keys[{digests[digest]}] (one key twice)")
            else:
                digests[digest] = i
        if "created" in item and not _is_iso_time(created):
            bad(f"{at}.created", f"must be an ISO-8601 time (got {json.dumps(created)})")
        if len(issues) == n:
            assert isinstance(name, str) and isinstance(digest, str) and isinstance(created, str)
            entries.append(KeyEntry(name, "admin" if scope == "admin" else "user", digest, created))
    if issues:
        raise KeyFileError(issues)
    return entries


def _is_iso_time(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # flock on the directory itself leaves no lock file behind in /etc/sparkctl.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        # No directory, so no file and nothing to race on; a save would create both.
        yield
        return
    except OSError as e:
        raise _write_error(directory, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _restore_owner(path: Path, old: os.stat_result) -> None:
    # write_atomic's new file belongs to whoever runs `sparkctl keys`; give it back to the owner and
    # group of the file it replaced (typically root:sparkctl), or the daemon could not read it.
    st = os.stat(path)
    if (st.st_uid, st.st_gid) == (old.st_uid, old.st_gid):
        return
    try:
        os.chown(path, old.st_uid, old.st_gid)
    except OSError as e:
        raise KeyFileWriteError(
            f"wrote {path} but could not give it back to its owner {old.st_uid}:{old.st_gid}: {e.strerror}",
            hint="run sparkctl keys as root (sudo), or fix the owner with chown",
        ) from None


def _give_to_daemon_group(path: Path) -> None:
    try:
        gid = grp.getgrnam(DAEMON_GROUP).gr_gid
    except KeyError:
        return  # no such group (a development machine, a container): nothing to give it to
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        # Not root and not in the group: the file stays the caller's, which is all a non-root user
        # running their own daemon needs.
        log.warning("could not give %s to group %s", path, DAEMON_GROUP)


def _write_error(path: Path, e: OSError) -> KeyFileWriteError:
    denied = e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    return KeyFileWriteError(
        f"cannot write {path}: {e.strerror or e}",
        hint="API keys are usually edited as root: sudo sparkctl keys …" if denied else None,
    )
