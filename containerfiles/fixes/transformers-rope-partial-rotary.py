"""transformers' rope validation: accept partial_rotary_factor whatever collection the config gives.

For Intel's Qwen3.5 AutoRound checkpoints, applied at container start by
mods/fix-qwen3.5-autoround/run.sh to the installed transformers. Their config carries
`partial_rotary_factor`, and transformers then widens the config's
`ignore_keys_at_rope_validation` with `| {"partial_rotary_factor"}`. Read from a checkpoint's
config.json that value is a list (JSON has no sets), the union raises TypeError and the model
does not load. `set(...)` first makes the union work for any collection. A transformers that
replaces the keys instead of widening them (5.0.0rc1) has no such union ("in effect").
"""

from __future__ import annotations

import re

from srcfix import Edit

KEYS = r"(?:self\.)?ignore_keys_at_rope_validation"
# `keys | {"partial_rotary_factor"}` where `keys` is not already wrapped in set()
UNION = rf'(?<!set\()(?<![\w.])(?P<keys>{KEYS}) \| \{{"partial_rotary_factor"\}}'
# ours or upstream's set(), or a transformers that replaces the keys rather than widening them
FIXED = (
    rf'set\({KEYS}\) \| \{{"partial_rotary_factor"\}}'
    r'|ignore_keys_at_rope_validation = \{"partial_rotary_factor"\}'
)


def _done(text: str) -> bool:
    return re.search(UNION, text) is None and re.search(FIXED, text) is not None


EDITS = [
    Edit(
        what="the ignored rope keys are a set before partial_rotary_factor is added",
        paths=("transformers/modeling_rope_utils.py",),
        pattern=UNION,
        replacement=r'set(\g<keys>) | {"partial_rotary_factor"}',
        done=_done,
        expect=None,
    ),
]
