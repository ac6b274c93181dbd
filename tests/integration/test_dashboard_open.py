"""The dashboard with `gateway.auth = "none"` on loopback (#17): it opens without a login, and every
local caller may start and stop models, as with the API. A module of its own: its gateway runs in
this process over units it deploys itself, which must not meet test_dashboard.py's installed
daemon (deploying prunes the unit files it did not render)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from sparkctl.catalog import load_catalog
from sparkctl.core.supervisor import Supervisor
from sparkctl.gateway.app import build_app
from sparkctl.sandbox.box import Box
from tests.conftest import box_settings
from tests.integration.conftest import emulated
from tests.integration.test_dashboard import CHROMIUM, WAIT

OPEN_PORT = 29101  # (ports 29100-29199 are the dashboard tests')
ENGINE_PORT = 29113


@pytest.fixture
async def open_gateway(box: Box, deploy: Any, tmp_path: Path) -> AsyncIterator[str]:
    """The gateway in this process with `gateway.auth = "none"`, on loopback only."""
    cat = tmp_path / "catalog"
    emulated(cat, "ui-open", ENGINE_PORT, load_time=0.2, serve={"direct_port": 0})
    settings = box_settings(box, gateway={"auth": "none", "listen": [f"127.0.0.1:{OPEN_PORT}"]})
    await asyncio.to_thread(deploy, cat, settings)
    catalog = load_catalog(settings, [cat])
    sup = Supervisor(catalog, settings)
    await sup.start()
    runner = web.AppRunner(build_app(settings, catalog, sup), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", OPEN_PORT).start()
    try:
        yield f"http://127.0.0.1:{OPEN_PORT}"
    finally:
        await runner.cleanup()
        await sup.close()


async def test_auth_none_on_loopback_opens_without_a_login(open_gateway: str) -> None:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = await b.new_page()
            await page.goto(f"{open_gateway}/")
            await page.locator('tr[data-model="ui-open"] .state[data-state="stopped"]').wait_for(timeout=WAIT)
            assert not await page.locator("#login").is_visible()
            assert not await page.locator("#who").is_visible()  # nobody to sign out
            # every local caller is admin, as on the API: the buttons are there, and they work
            # (the page's POSTs carry its loopback Origin and no body, which auth = "none" allows)
            await page.locator('tr[data-model="ui-open"] button.start').click()
            await page.locator('tr[data-model="ui-open"] .state[data-state="ready"]').wait_for(timeout=WAIT)
            await page.locator('tr[data-model="ui-open"] button.stop-now').click()
            await page.locator('tr[data-model="ui-open"] .state[data-state="stopped"]').wait_for(timeout=WAIT)
            assert not await page.locator("#notice").is_visible()  # no error was shown
        finally:
            await b.close()
