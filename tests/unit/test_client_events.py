"""The operator commands' reading of the daemon's event feed (client.py `Client.events`): state
events are yielded, `eta` events (for displays) are passed over, and an `error` event (the key was
revoked) ends the feed with that error, over the chunked encoding the daemon sends."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from sparkctl.client import ENV_KEY, ENV_URL, Client
from sparkctl.errors import ApiError
from sparkctl.settings import Settings

EVENTS = [
    b'event: state\ndata: {"model": "a", "state": "starting", "time": 1.0, "eta_seconds": 41.0}\n\n',
    b'event: eta\ndata: {"model": "b", "eta_seconds": 90.0, "eta_guess": true, "time": 1.5}\n\n'
    b'event: state\ndata: {"model": "a", "state": "ready", "time": 2.0}\n\n',
    b": ping\n\n",
    b'event: error\ndata: {"error": {"message": "The key was revoked.", "type": "authentication_error",'
    b' "param": null, "code": "unauthorized"}}\n\n',
]


class _Feed(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in EVENTS:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def feed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Feed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(ENV_URL, f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv(ENV_KEY, "sk-spark-test")
    try:
        yield Client(Settings())
    finally:
        server.shutdown()
        server.server_close()


def test_state_events_are_read_eta_events_passed_over_and_an_error_ends_the_feed(feed: Client) -> None:
    seen = []
    with pytest.raises(ApiError) as ended:
        for event in feed.events():
            seen.append((event.model, event.state.value, event.eta_seconds))
    assert seen == [("a", "starting", 41.0), ("a", "ready", None)]  # b's eta event is not a state
    assert ended.value.code == "unauthorized" and "revoked" in ended.value.message
