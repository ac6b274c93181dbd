"""A network between boxes, standing in for the Sparks' direct link (#15): boxes booted with their
own network namespace (`Box(net="private")`), joined by veth pairs created straight inside those
namespaces — nothing appears in the host's, and everything goes with the boxes.

Two boxes get one veth pair, as two Sparks get one QSFP cable. More get a switch: a bridge in the
first box's namespace with a veth to each other box (the first box's address on the bridge), as a
third Spark joins the first two behind a switch. Addresses are `PREFIX.<n>/24`, n = 1, 2, …, in
the boxes' order; the caller picks a prefix that is its own (the tests use 10.77.0).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from sparkctl.errors import SandboxError
from sparkctl.sandbox.box import Box

INTERFACE = "qsfp0"  # each box's end of the link: the name a Spark's QSFP port stands for here
BRIDGE = "qsfpsw"
_PREFIX = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


@dataclass
class Network:
    boxes: list[Box]
    prefix: str

    def address(self, index: int) -> str:
        return f"{self.prefix}.{index + 1}"

    def cut(self, index: int) -> None:
        """Pull box `index`'s cable: its end goes down (no carrier), as an unplugged port; its
        peers' packets to it go nowhere, so they time out rather than being refused."""
        _ip(self.boxes[index], "link", "set", INTERFACE, "down")

    def mend(self, index: int) -> None:
        _ip(self.boxes[index], "link", "set", INTERFACE, "up")


def join(boxes: Sequence[Box], prefix: str = "10.77.0") -> Network:
    """Link the boxes (each booted with net="private") and address them."""
    if len(boxes) < 2:
        raise SandboxError("a network needs two boxes at least")
    m = _PREFIX.fullmatch(prefix)
    if m is None or any(int(part) > 255 for part in m.groups()) or len(boxes) > 250:
        raise SandboxError(f"not a /24 prefix for {len(boxes)} boxes: {prefix!r}")
    net = Network(list(boxes), prefix)
    for box in boxes:
        _ip(box, "link", "set", "lo", "up")
    if len(boxes) == 2:
        _pair(boxes[0], INTERFACE, boxes[1], INTERFACE)
        _address(boxes[0], INTERFACE, net.address(0))
    else:
        head = boxes[0]
        _ip(head, "link", "add", BRIDGE, "type", "bridge")
        _ip(head, "link", "set", BRIDGE, "up")
        for i, box in enumerate(boxes[1:], start=1):
            port = f"{INTERFACE}p{i}"
            _pair(head, port, box, INTERFACE)
            _ip(head, "link", "set", port, "master", BRIDGE)
            _ip(head, "link", "set", port, "up")
        # The head's own end: a veth into the bridge, named like every other box's, so that
        # cutting any box's cable (cut) means the same thing.
        _ip(head, "link", "add", INTERFACE, "type", "veth", "peer", "name", f"{INTERFACE}p0")
        _ip(head, "link", "set", f"{INTERFACE}p0", "master", BRIDGE)
        _ip(head, "link", "set", f"{INTERFACE}p0", "up")
        _address(head, INTERFACE, net.address(0))
    for i, box in enumerate(boxes[1:], start=1):
        _address(box, INTERFACE, net.address(i))
    return net


def _pair(a: Box, name_a: str, b: Box, name_b: str) -> None:
    """A veth pair with one end in each box's namespace (created there: never in the host's)."""
    pid_a, pid_b = _netns_pid(a), _netns_pid(b)
    end_b = ["peer", "name", name_b, "netns", str(pid_b)]
    _run(["ip", "link", "add", name_a, "netns", str(pid_a), "type", "veth", *end_b])


def _address(box: Box, interface: str, address: str) -> None:
    _ip(box, "addr", "add", f"{address}/24", "dev", interface)
    _ip(box, "link", "set", interface, "up")


def _netns_pid(box: Box) -> int:
    pid = box.init_pid
    if pid is None:
        raise SandboxError(f"the box at {box.path} is not running")
    if box.net != "private":
        raise SandboxError(f"the box at {box.path} shares the host's network: boot it with net='private'")
    return pid


def _ip(box: Box, *args: str) -> None:
    _run(["nsenter", "-t", str(_netns_pid(box)), "-n", "--", "ip", *args])


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()}")
