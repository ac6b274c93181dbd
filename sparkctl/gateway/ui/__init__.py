"""The dashboard (#17): `GET /` → `/ui/`, a page served by the daemon itself, live through an event
stream of its own, with start and stop for admin keys, a log tail and a chat playground for every
key. Static HTML, CSS and JavaScript in `assets/` (inside the wheel; no build step, no CDN); why
so, in docs/design/dashboard.md.

  pages.py    the page, its assets, and the headers every dashboard answer carries (CSP)
  login.py    a key exchanged for a session cookie, and who the caller is
  live.py     the models, nodes and rates, as server-sent snapshots
  logs.py     a model's journal, streamed
"""

from __future__ import annotations

from aiohttp import web

from sparkctl.gateway.ui import live, login, logs, pages


def register(app: web.Application) -> None:
    pages.register(app)
    login.register(app)
    live.register(app)
    logs.register(app)


__all__ = ["register"]
