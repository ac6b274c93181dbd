"""The core: who runs on the GPU and when.

`scheduler` decides (pure: no asyncio, no I/O), `supervisor` is the one owner task that feeds it
systemd's events and performs its effects, `systemd` is the D-Bus client, `host` and `weights`
are the facts about this machine the supervisor needs (memory, journal, weights on disk).
"""
