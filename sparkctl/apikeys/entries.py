"""One entry of the key file, and the strict reading of the file's JSON:
`{"version": 1, "keys": [{"name", "scope", "sha256", "created"}]}`, every problem reported with
its field."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sparkctl.errors import InvalidKeyNameError, Issue, KeyFileError

KEY_PREFIX = "sk-spark-"
FILE_VERSION = 1
# Readable by the daemon's group, never by everyone: the digests are not secrets in the way the
# keys are, but there is no reason to hand them out.
FILE_MODE = 0o640
# Matched with fullmatch: `$` would let a trailing newline through.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
Scope = Literal["admin", "user"]
SCOPES: tuple[Scope, ...] = ("admin", "user")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_ENTRY_FIELDS = ("name", "scope", "sha256", "created")
_TOP_FIELDS = ("version", "keys")


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


def entries_from(data: Any, source: str) -> list[KeyEntry]:
    """The file's entries; a KeyFileError naming every problem, top level first, then each entry's."""
    raw, issues = _keys_list(data, source)
    reader = _EntryReader(source, issues)
    entries: list[KeyEntry] = []
    for i, item in enumerate(raw):
        entry = reader.entry(i, item)
        if entry is not None:
            entries.append(entry)
    if issues:
        raise KeyFileError(issues)
    return entries


def _keys_list(data: Any, source: str) -> tuple[list[Any], list[Issue]]:
    """The "keys" list and the top level's issues so far; raises where the entries cannot be read."""
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
    return raw, issues


@dataclass(slots=True)
class _EntryReader:
    """Reads the entries of "keys" in order, adding each problem to `issues`; it remembers the
    names and digests seen so far, which must be unique."""

    source: str
    issues: list[Issue]
    names: dict[str, int] = field(default_factory=dict)  # name → index of the entry that has it
    digests: dict[str, int] = field(default_factory=dict)  # sha256 → index of the entry that has it

    def bad(self, at: str, message: str) -> None:
        self.issues.append(Issue(self.source, at, message))

    def entry(self, i: int, item: Any) -> KeyEntry | None:
        """keys[i] as an entry, or None (and its issues added) if anything in it is wrong."""
        at = f"keys[{i}]"
        if not isinstance(item, dict):
            self.bad(at, f"must be an object (got {_json_type(item)})")
            return None
        before = len(self.issues)
        self._check_fields(at, item)
        name, scope, digest, created = (item.get(k) for k in _ENTRY_FIELDS)
        if "name" in item:
            self._check_name(at, i, name)
        if "scope" in item and scope not in SCOPES:
            self.bad(f"{at}.scope", f'must be "admin" or "user" (got {json.dumps(scope)})')
        if "sha256" in item:
            self._check_digest(at, i, digest)
        if "created" in item and not _is_iso_time(created):
            self.bad(f"{at}.created", f"must be an ISO-8601 time (got {json.dumps(created)})")
        if len(self.issues) > before:
            return None
        assert isinstance(name, str) and isinstance(digest, str) and isinstance(created, str)
        return KeyEntry(name, "admin" if scope == "admin" else "user", digest, created)

    def _check_fields(self, at: str, item: dict[str, Any]) -> None:
        for k in item:
            if k not in _ENTRY_FIELDS:
                self.bad(f"{at}.{k}", f"unknown key (allowed: {', '.join(_ENTRY_FIELDS)})")
        for k in _ENTRY_FIELDS:
            if k not in item:
                self.bad(f"{at}.{k}", "missing")

    def _check_name(self, at: str, i: int, name: object) -> None:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            self.bad(f"{at}.name", f"invalid name {json.dumps(name)} (A-Z a-z 0-9 . _ -, ≤ 64)")
        elif name in self.names:
            self.bad(f"{at}.name", f"duplicate name {name!r} (also keys[{self.names[name]}])")
        else:
            self.names[name] = i

    def _check_digest(self, at: str, i: int, digest: object) -> None:
        if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest):
            self.bad(f"{at}.sha256", "must be 64 lowercase hex digits")
        elif digest in self.digests:
            # One key, two entries: which name and scope it carries would be ambiguous.
            self.bad(f"{at}.sha256", f"same digest as keys[{self.digests[digest]}] (one key twice)")
        else:
            self.digests[digest] = i


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
