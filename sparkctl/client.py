"""A small client of the daemon's admin API, for the operator commands (`ps`, `start`, `stop`).

It talks to the daemon's local socket (/run/sparkctl/sparkctl.sock, where root needs no key) or,
with $SPARKCTL_API_KEY set, to the gateway over HTTP. Synchronous (http.client): a CLI call is one
request. Answers are the typed records of `sparkctl.api`, the ones the gateway builds. When the
daemon cannot be reached, the error says what to start.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from sparkctl.api import DaemonStatus, ErrorEnvelope, ImageStatus, ModelStatus, PullEvent, StateEvent
from sparkctl.errors import ApiError, DaemonUnavailableError, ErrorCode
from sparkctl.paths import ADMIN_SOCKET, user_admin_socket
from sparkctl.settings import Settings, split_host_port

ENV_KEY = "SPARKCTL_API_KEY"
ENV_URL = "SPARKCTL_URL"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class Client:
    def __init__(self, settings: Settings, *, timeout: float = 30 * 60) -> None:
        self.settings = settings
        self.timeout = timeout
        self.key = os.environ.get(ENV_KEY)
        self.url = os.environ.get(ENV_URL)
        # The daemon this configuration describes: a user's own stack (install --user) has its
        # admin socket in the user's runtime directory.
        local = user_admin_socket() if settings.systemd.bus == "user" else ADMIN_SOCKET
        self.unix = str(local) if not self.key and local is not None and local.exists() else None

    def _connection(self) -> http.client.HTTPConnection:
        if self.unix:
            return _UnixConnection(self.unix, self.timeout)
        host, port = split_host_port(
            self.url.removeprefix("http://").split("/")[0] if self.url else self.settings.gateway.listen[0]
        )
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def request(self, method: str, path: str) -> Any:
        conn = self._connection()
        headers = {"Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        try:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except (ConnectionRefusedError, FileNotFoundError) as e:
            raise DaemonUnavailableError(
                f"the sparkctl daemon is not running ({e.strerror or e})",
                hint="start it: `sudo systemctl start sparkctl.socket` (or `sudo sparkctl install` first)",
            ) from None
        except PermissionError:
            raise DaemonUnavailableError(
                f"no permission to use {self.unix}",
                hint=f"run as root, or set {ENV_KEY} to an admin key",
            ) from None
        except OSError as e:
            raise DaemonUnavailableError(f"cannot reach the sparkctl daemon: {e}") from None
        finally:
            conn.close()
        if response.status >= 400:
            raise self._error(response.status, body)
        return json.loads(body) if body else None

    def _error(self, status: int, body: bytes) -> ApiError:
        try:
            detail = ErrorEnvelope.model_validate_json(body).error
            code, message = detail.code, detail.message
        except ValidationError:
            code, message = ErrorCode.API_ERROR.value, f"HTTP {status}"
        if status == 401 and not self.key:
            message += f" (set {ENV_KEY} to an admin key, or run as root)"
        return ApiError(status, code, message)

    def events(self) -> Iterator[StateEvent]:
        """The daemon's event stream: first every model's current state, then each change as it
        happens."""
        conn = self._connection()
        headers = {"Accept": "text/event-stream"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        try:
            conn.request("GET", "/api/v1/events", headers=headers)
            response = conn.getresponse()
            if response.status >= 400:
                raise ApiError(response.status, "api_error", f"event stream: HTTP {response.status}")
            kind = "state"
            while True:
                line = response.fp.readline()
                if not line:
                    return
                if line.startswith(b"event: "):
                    kind = line[7:].strip().decode()
                elif line.startswith(b"data: ") and kind == "state":  # (eta events: for displays)
                    yield StateEvent.model_validate_json(line[6:])
                elif line.startswith(b"data: ") and kind == "error":  # its key was revoked
                    error = ErrorEnvelope.model_validate_json(line[6:]).error
                    raise ApiError(401, error.code, error.message)
                elif not line.strip():
                    kind = "state"  # an event without a name is a state event
        except OSError as e:
            raise DaemonUnavailableError(f"lost the daemon's event stream: {e}") from None
        finally:
            conn.close()

    def status(self) -> DaemonStatus:
        return DaemonStatus.model_validate(self.request("GET", "/api/v1/status"))

    def start(self, model: str) -> ModelStatus:
        return ModelStatus.model_validate(self.request("POST", f"/api/v1/models/{_segment(model)}/start"))

    def stop(self, model: str, *, now: bool = False) -> ModelStatus:
        path = f"/api/v1/models/{_segment(model)}/stop{'?now=1' if now else ''}"
        return ModelStatus.model_validate(self.request("POST", path))


class PeerClient:
    """Another node of the cluster (#15), as an operator command on this node reaches it: its
    gateway's URL and an admin key of its own ([cluster] peers). Every failure is a
    DaemonUnavailableError or an ApiError that names the node."""

    def __init__(
        self, name: str, url: str, key: str, *, connect_timeout: float = 5.0, read_timeout: float = 120.0
    ) -> None:
        self.name = name
        parts = urllib.parse.urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.key = key
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    def _open(self, method: str, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(self.read_timeout)
            conn.request(method, path, headers={"Authorization": f"Bearer {self.key}"})
            response = conn.getresponse()
        except OSError as e:
            conn.close()
            raise DaemonUnavailableError(
                f"{self.name} does not answer at http://{self.host}:{self.port}: {e.strerror or e}"
            ) from None
        if response.status >= 400:
            body = response.read()
            conn.close()
            try:
                detail = ErrorEnvelope.model_validate_json(body).error
                code, message = detail.code, detail.message
            except ValidationError:
                code, message = ErrorCode.API_ERROR.value, f"HTTP {response.status}"
            raise ApiError(response.status, code, f"{self.name}: {message}")
        return conn, response

    def pull(self, model: str) -> Iterator[PullEvent]:
        """`POST /api/v1/models/{model}/pull` on the node: its progress, then its outcome. A
        connection lost midway ends in DaemonUnavailableError (the node's pull goes on)."""
        conn, response = self._open("POST", f"/api/v1/models/{_segment(model)}/pull")
        try:
            while True:
                try:
                    line = response.fp.readline()
                except OSError as e:
                    raise DaemonUnavailableError(
                        f"lost {self.name} during the pull: {e.strerror or e}"
                    ) from None
                if not line:
                    raise DaemonUnavailableError(f"{self.name} ended the pull's stream before its outcome")
                try:
                    event = PullEvent.model_validate_json(line)
                except ValidationError:
                    continue  # a line this client does not read
                yield event
                if event.event != "line":
                    return
        finally:
            conn.close()

    def images(self) -> list[ImageStatus]:
        conn, response = self._open("GET", "/api/v1/images")
        try:
            body = response.read()
        except OSError as e:
            raise DaemonUnavailableError(f"lost {self.name}: {e.strerror or e}") from None
        finally:
            conn.close()
        try:
            return [ImageStatus.model_validate(row) for row in json.loads(body)]
        except (ValueError, ValidationError, TypeError):
            raise DaemonUnavailableError(f"{self.name} answered /api/v1/images with something else") from None


def _segment(model: str) -> str:
    """A model name as one path segment: whatever an operator typed stays one argument."""
    return urllib.parse.quote(model, safe=":")
