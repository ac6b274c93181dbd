"""Logging for the daemon: to journald with structured fields when systemd runs it, readable
lines on a terminal otherwise.

Fields worth filtering on (`journalctl -u sparkctl MODEL=qwen3.5-0.8b`, `STATUS=503`) travel as
journal fields: MODEL, REQUEST_ID, UNIT, STATUS, DURATION, STATE, ROUTE. The native protocol is
one datagram per entry on /run/systemd/journal/socket (systemd's own Python binding needs to be
compiled against libsystemd, which is not worth it for this).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import traceback

from sparkctl.gateway.context import AccessLog, ConsoleAccessLog

JOURNAL_SOCKET = "/run/systemd/journal/socket"
FIELDS = {
    "model": "MODEL",
    "request_id": "REQUEST_ID",
    "unit": "UNIT",
    "status": "STATUS",
    "duration": "DURATION",
    "state": "STATE",
    "route": "ROUTE",
}
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalHandler(logging.Handler):
    def __init__(self, identifier: str = "sparkctl", path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.identifier = identifier
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info))
            fields = {
                "MESSAGE": message,
                "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
                "SYSLOG_IDENTIFIER": self.identifier,
                "LOGGER": record.name,
                "CODE_FILE": record.pathname,
                "CODE_LINE": str(record.lineno),
                "CODE_FUNC": record.funcName,
            }
            for attr, name in FIELDS.items():
                value = record.__dict__.get(attr)
                if value is not None:
                    fields[name] = str(value)
            self.sock.sendto(encode(fields), self.path)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


def encode(fields: dict[str, str]) -> bytes:
    """journald's native format: KEY=value lines, or KEY\\n<64-bit LE length><value>\\n for values
    with newlines."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class ConsoleFormatter(logging.Formatter):
    """`12:00:01 INFO  gpt-oss-20b is ready  model=gpt-oss-20b` on a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.getMessage()}"
        extras = " ".join(f"{k}={record.__dict__[k]}" for k in FIELDS if record.__dict__.get(k) is not None)
        if extras:
            line += f"  [{extras}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def under_journald() -> bool:
    """stderr goes to the journal (systemd sets JOURNAL_STREAM to its device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}" and os.path.exists(JOURNAL_SOCKET)


def setup(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    handler: logging.Handler
    if under_journald():
        handler = JournalHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(ConsoleFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class JournalAccessLog:
    """One access line per request, on the hot path: straight to journald as a native datagram
    (no LogRecord, no formatter: a few µs). `journalctl -u sparkctl MODEL=… STATUS=…` filters on
    its fields."""

    def __init__(self, identifier: str = "sparkctl") -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._prefix = f"PRIORITY=6\nSYSLOG_IDENTIFIER={identifier}\nLOGGER=sparkctl.access\n".encode()
        self.enabled = logging.getLogger("sparkctl.access").isEnabledFor(logging.INFO)

    def request(
        self, method: str, route: str, model: str, status: int, seconds: float, request_id: str
    ) -> None:
        if not self.enabled:
            return
        fields = (
            f"MESSAGE={method} {route} {model} {status} {seconds:.3f}s {request_id}\n"
            f"MODEL={model}\nREQUEST_ID={request_id}\nSTATUS={status}\n"
            f"DURATION={seconds:.6f}\nROUTE={route}\n"
        )
        # journald restarting: a lost access line, never a failed request
        with contextlib.suppress(OSError):
            self._sock.sendto(self._prefix + fields.encode("utf-8", "replace"), JOURNAL_SOCKET)

    def close(self) -> None:
        self._sock.close()


def access_log() -> AccessLog:
    """The daemon's access log: journald's native protocol when systemd runs it, else lines on
    stderr."""
    return JournalAccessLog() if under_journald() else ConsoleAccessLog()
