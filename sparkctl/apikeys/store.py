"""The keys of one key file, and changing them: add, revoke, save atomically keeping the file's
owner and mode, and `edit` — load, change, save under a lock — which `sparkctl keys` uses."""

from __future__ import annotations

import errno
import fcntl
import grp
import hmac
import json
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sparkctl.apikeys.entries import (
    FILE_MODE,
    FILE_VERSION,
    KeyEntry,
    check_name,
    entries_from,
    hash_key,
    new_key,
)
from sparkctl.errors import Issue, KeyExistsError, KeyFileError, KeyFileWriteError, KeyNotFoundError
from sparkctl.paths import write_atomic

log = logging.getLogger("sparkctl.keys")
# The group sparkctl.service runs as (units/sparkctl.service, Group=). A key file sparkctl
# creates is given to it, so the daemon can read a file `sudo sparkctl keys add` just made.
DAEMON_GROUP = "sparkctl"


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
        return cls(entries_from(data, source))

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
