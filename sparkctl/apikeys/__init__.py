"""API keys (BRIEF §4.2, §4.4): the key file `sparkctl keys` edits and the daemon reads.

The file is JSON, `{"version": 1, "keys": [{"name", "scope", "sha256", "created"}]}`, holding
only digests: a key is shown once, by `keys add`, and can never be read back. The CLI edits the
file in place (`store.edit`) and the daemon notices by itself (`live.KeyFile`), so adding or
revoking a key needs no restart and no connection to the daemon.
"""

from sparkctl.apikeys.entries import KEY_PREFIX, KeyEntry, Scope, check_name, hash_key, new_key
from sparkctl.apikeys.live import KeyFile, presented_key
from sparkctl.apikeys.store import KeyStore, edit

__all__ = [
    "KEY_PREFIX",
    "KeyEntry",
    "KeyFile",
    "KeyStore",
    "Scope",
    "check_name",
    "edit",
    "hash_key",
    "new_key",
    "presented_key",
]
