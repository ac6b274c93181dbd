"""The dashboard in a real browser (#17): Debian's headless chromium, driven by Playwright through
its executable path, against the real stack — `sparkctl install` into the sandboxed systemd, the
daemon socket-activated as the `sparkctl` user, emulated engines as real units, their journal
read by the daemon.

It lists the models; a request made elsewhere shows a model going starting → ready without a
reload; the stop button stops it (systemd's view checked); the log tail shows the engine's
lines; the playground streams an answer and shows a cold start's loading feedback; hostile text
from a catalog and an engine's log renders inert; a non-admin key sees no buttons; the page fits
a phone's width in dark and light. (`auth = "none"`: test_dashboard_open.py.)

Set SPARKCTL_DASHBOARD_SHOTS=DIR to keep the screenshots of the main views (docs/dashboard/).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from sparkctl.sandbox.box import Box
from sparkctl.sandbox.weights import write_placeholder
from tests.conftest import IN_CI
from tests.integration.conftest import SPARKCTL, emulated, install

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Ports 29100-29199 are this module's.
PORT = 29100
ENGINE_PORTS = {"ui-chat": 29110, "ui-evil": 29111, "ui-other": 29112, "ui-broken": 29114}
MODELS = ["ui-broken", "ui-chat", "ui-evil", "ui-other"]
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
EVIL_LOG = "<script>window.__pwned=3</script><img src=y onerror=window.__pwned=4> said the engine"
# An engine that says something hostile in its log before it becomes the emulator.
EVIL_ENGINE = ["/bin/sh", "-c", f"echo '{EVIL_LOG}'; exec {SPARKCTL} emulate \"$@\"", "sh"]
WAIT = 20_000  # ms: a cold start through socket activation on a busy 2-CPU machine
SHOTS = os.environ.get("SPARKCTL_DASHBOARD_SHOTS")

if not Path(CHROMIUM).exists():
    if IN_CI:
        pytest.fail(f"{CHROMIUM} is missing: ./scripts/setup installs Debian's chromium", pytrace=False)
    pytest.skip("Debian's chromium is not installed (./scripts/setup)", allow_module_level=True)


@dataclass
class Installed:
    box: Box
    admin: str
    user: str
    config: Path
    url: str

    def unit_state(self, model: str) -> str:
        return self.box.systemctl("is-active", f"sparkctl-{model}.service", check=False).stdout.strip()

    def admin_call(self, action: str, model: str) -> None:
        import urllib.request

        request = urllib.request.Request(
            f"{self.url}/api/v1/models/{model}/{action}",
            method="POST",
            headers={"Authorization": f"Bearer {self.admin}"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 202

    def chat(self, model: str) -> str:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.user, max_retries=0, timeout=60)
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        return reply.choices[0].message.content or ""

    def settle(self, model: str, want: str) -> None:
        """Wait (bounded) until systemd says the model's unit is `want`."""
        for _ in range(200):
            if self.unit_state(model) == want:
                return
            threading.Event().wait(0.1)
        raise AssertionError(f"sparkctl-{model}.service is {self.unit_state(model)}, not {want}")


@pytest.fixture(scope="module")
def installed(box: Box) -> Iterator[Installed]:
    base = box.path / "dash"
    cat = base / "models"
    common: dict[str, Any] = {"serve": {"direct_port": 0, "idle_timeout": "10m"}}
    emulated(
        cat,
        "ui-chat",
        ENGINE_PORTS["ui-chat"],
        load_time=2.0,
        description="An emulated chat model",
        engine={"args": ["--load-time", "2.0", "--tokens-per-second", "25"]},
        **common,
    )
    emulated(
        cat,
        "ui-evil",
        ENGINE_PORTS["ui-evil"],
        load_time=0.2,
        description=HOSTILE,
        notes=HOSTILE,
        engine={"command": EVIL_ENGINE},
        **common,
    )
    emulated(cat, "ui-other", ENGINE_PORTS["ui-other"], load_time=0.2, **common)
    emulated(cat, "ui-broken", ENGINE_PORTS["ui-broken"], engine={"args": ["--load-time", "soon"]}, **common)
    for d in (base / "hf", base / "compile"):
        d.mkdir(parents=True, exist_ok=True)
    write_placeholder(base / "hf", "org/model")
    config = base / "sparkctl.toml"
    config.write_text(
        f'[gateway]\nlisten = ["127.0.0.1:{PORT}"]\n'
        f'[catalog]\ndirs = ["{cat}"]\n'
        f'[runtime]\ncontainer_network = "host"\nsparkctl = "{SPARKCTL}"\nhf_cache = "{base / "hf"}"\n'
        f'compile_cache = "{base / "compile"}"\n'
        '[scheduler]\ndrain_timeout = "30s"\n'
    )
    admin = install(box, config)
    user = box.run(SPARKCTL, "--config", str(config), "keys", "add", f"viewer-{os.getpid()}").stdout.strip()
    assert admin.startswith("sk-spark-") and user.startswith("sk-spark-"), (admin, user)
    yield Installed(box, admin, user, config, f"http://127.0.0.1:{PORT}")
    box.run(SPARKCTL, "--config", str(config), "uninstall", timeout=120)
    left = box.systemctl(
        "list-units", "--plain", "--no-legend", "--state=active,activating", "sparkctl*"
    ).stdout
    box.systemctl("reset-failed", check=False)
    shutil.rmtree(base, ignore_errors=True)
    assert not left.strip(), f"uninstall left units running: {left}"


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A fresh headless chromium per test: gone (with its renderers) before the leak check."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _page(browser: Browser, installed: Installed, key: str, **context: Any) -> Page:
    """The dashboard, signed in with `key` as a person would: typed into the form, Enter."""
    page = browser.new_context(**context).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{installed.url}/")  # the root redirects to the dashboard
    assert page.url == f"{installed.url}/ui/"
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-key")).to_be_focused()  # the keyboard can start at once
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    expect(page.locator("#models tbody tr[data-model]")).to_have_count(len(MODELS), timeout=WAIT)
    page.evaluate("window.__loadedOnce = true")  # gone if the page reloads
    page.set_default_timeout(WAIT)
    assert not errors, errors
    return page


def _state(page: Page, model: str) -> Any:
    return page.locator(f'tr[data-model="{model}"] .state')


def test_the_page_lists_the_models_and_shows_a_start_made_elsewhere_live(
    browser: Browser, installed: Installed
) -> None:
    page = _page(browser, installed, installed.admin)
    rows = page.locator("#models tbody tr[data-model]")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.model)")) == MODELS
    expect(page.locator('tr[data-model="ui-chat"] .desc').first).to_have_text("An emulated chat model")
    expect(_state(page, "ui-chat")).to_have_attribute("data-state", "stopped")
    expect(page.locator("#nodes .node")).to_have_count(1)
    expect(page.locator("#who-name")).to_contain_text("(admin)")

    chat = threading.Thread(target=installed.chat, args=("ui-chat",))  # a client elsewhere
    chat.start()
    try:
        expect(_state(page, "ui-chat")).to_have_attribute("data-state", "starting")
        # while it loads: its progress, once a load time was learned, or that there is none yet
        expect(page.locator('tr[data-model="ui-chat"] td[data-label="Load"]')).to_contain_text("loading")
        expect(_state(page, "ui-chat")).to_have_attribute("data-state", "ready")
    finally:
        chat.join(60)
    assert page.evaluate("window.__loadedOnce") is True  # no reload happened
    expect(page.locator('tr[data-model="ui-chat"] td[data-label="Idle stop"] .countdown')).to_contain_text(
        "m"
    )
    expect(page.locator('tr[data-model="ui-chat"] td[data-label="Load"]')).to_contain_text("last ")
    _shots(page, "models")
    # once a load time is learned, the next load shows its progress and ETA
    installed.admin_call("stop", "ui-chat")
    expect(_state(page, "ui-chat")).to_have_attribute("data-state", "stopped")
    installed.admin_call("start", "ui-chat")
    loading = page.locator('tr[data-model="ui-chat"] td[data-label="Load"]')
    expect(loading.locator("progress")).to_be_visible()
    expect(loading).to_contain_text("eta ")
    expect(_state(page, "ui-chat")).to_have_attribute("data-state", "ready")


def test_the_stop_buttons_stop_the_model_as_systemd_sees_it(browser: Browser, installed: Installed) -> None:
    installed.admin_call("start", "ui-other")
    installed.settle("ui-other", "active")
    page = _page(browser, installed, installed.admin)
    expect(_state(page, "ui-other")).to_have_attribute("data-state", "ready")
    page.locator('tr[data-model="ui-other"] button.stop').click()
    expect(_state(page, "ui-other")).to_have_attribute("data-state", "stopped")
    installed.settle("ui-other", "inactive")
    # the start button starts it again, and stop-now stops it at once
    page.locator('tr[data-model="ui-other"] button.start').click()
    expect(_state(page, "ui-other")).to_have_attribute("data-state", "ready")
    assert installed.unit_state("ui-other") == "active"
    page.locator('tr[data-model="ui-other"] button.stop-now').click()
    expect(_state(page, "ui-other")).to_have_attribute("data-state", "stopped")
    installed.settle("ui-other", "inactive")


def test_the_page_works_from_the_keyboard(browser: Browser, installed: Installed) -> None:
    """Signing in is typed (in _page); then Tab reaches a model's Start, Enter starts it, and the
    focus stays in its row while the page refreshes, on the next usable button (Stop)."""
    page = _page(browser, installed, installed.admin)
    start = 'tr[data-model="ui-other"] button.start'
    for _ in range(60):
        if page.evaluate(f"document.activeElement.matches({start!r})"):
            break
        page.keyboard.press("Tab")
    else:
        raise AssertionError("Tab never reached ui-other's Start button")
    page.keyboard.press("Enter")
    expect(_state(page, "ui-other")).to_have_attribute("data-state", "ready")
    assert installed.unit_state("ui-other") == "active"
    focused = page.locator(":focus")
    expect(focused).to_have_class("stop quiet")
    page.wait_for_timeout(2500)  # refreshes come and go; the focus stays
    expect(focused).to_have_class("stop quiet")
    page.keyboard.press("Enter")
    expect(_state(page, "ui-other")).to_have_attribute("data-state", "stopped")
    installed.settle("ui-other", "inactive")


def test_the_log_tail_shows_the_engines_lines_as_they_come(browser: Browser, installed: Installed) -> None:
    page = _page(browser, installed, installed.user)
    page.locator('tr[data-model="ui-other"] button.logs').click()
    expect(page.locator("#view-logs")).to_be_visible()
    expect(page.locator("#log-model")).to_have_value("ui-other")
    marker = page.locator("#log .ln.engine", has_text="ready exec_to_ready_ms=")
    before = installed.box.run(  # earlier tests may have started it already: the backlog shows those
        "journalctl", "--no-pager", "-o", "cat", "-u", "sparkctl-ui-other.service"
    ).stdout.count("ready exec_to_ready_ms=")
    expect(marker).to_have_count(before)
    installed.admin_call("start", "ui-other")  # new lines arrive while the page follows
    expect(marker).to_have_count(before + 1)
    expect(page.locator("#log .ln.systemd").first).to_be_visible()  # systemd's lines about the unit
    _shots(page, "logs")
    installed.admin_call("stop", "ui-other")
    installed.settle("ui-other", "inactive")


def test_the_playground_streams_an_answer_after_showing_the_cold_start(
    browser: Browser, installed: Installed
) -> None:
    installed.admin_call("stop", "ui-chat")
    installed.settle("ui-chat", "inactive")
    page = _page(browser, installed, installed.user)
    page.locator("button.tab[data-view=playground]").click()
    page.locator("#play-model").select_option("ui-chat")
    page.locator("#play-max").fill("40")  # 25 tokens a second: under two seconds of streaming
    page.locator("#play-input").fill("Tell me about the DGX Spark.")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#play-status")).to_contain_text("waiting for ui-chat")  # the cold start
    answer = page.locator("#chat .msg.assistant").last
    # streaming: text shows while the answer still runs (the stop button is live) …
    page.wait_for_function(
        "() => document.querySelector('#chat .msg.assistant:last-child').textContent.length > 0"
        " && !document.getElementById('play-stop').disabled"
    )
    # … and the rest follows
    expect(page.locator("#play-stop")).to_be_disabled()
    assert len(answer.text_content() or "") > 20
    expect(page.locator("#chat .msg.error")).to_have_count(0)
    _shots(page, "playground")
    # the stop button ends a running answer
    page.locator("#play-max").fill("2000")
    page.locator("#play-input").fill("And once more, at length.")
    page.locator("#play-send").click()
    page.wait_for_function("() => !document.getElementById('play-stop').disabled")
    page.locator("#play-stop").click()
    expect(page.locator("#play-status")).to_have_text("stopped")
    expect(page.locator("#play-send")).to_be_enabled()


def test_a_failed_start_shows_why_with_the_engines_last_line(browser: Browser, installed: Installed) -> None:
    page = _page(browser, installed, installed.admin)
    page.locator('tr[data-model="ui-broken"] button.start').click()
    expect(_state(page, "ui-broken")).to_have_attribute("data-state", "failed")
    why = page.locator('tr[data-why="ui-broken"]')
    expect(why).to_contain_text("failed to start")
    expect(why).to_contain_text("invalid float value: 'soon'")  # the engine's own last words
    _shots(page, "failed")
    installed.box.systemctl("reset-failed", "sparkctl-ui-broken.service", check=False)


def test_hostile_text_from_the_catalog_and_the_engine_renders_inert(
    browser: Browser, installed: Installed
) -> None:
    installed.admin_call("start", "ui-evil")
    installed.settle("ui-evil", "active")
    page = _page(browser, installed, installed.admin)
    desc = page.locator('tr[data-model="ui-evil"] .desc').first
    expect(desc).to_have_text(HOSTILE)  # shown as text, exactly
    page.locator('tr[data-model="ui-evil"] button.logs').click()
    line = page.locator("#log .ln", has_text="said the engine").first
    expect(line).to_contain_text(EVIL_LOG)
    assert page.locator("#models img, #models script, #log img, #log script").count() == 0
    page.locator("button.tab[data-view=models]").click()
    assert page.evaluate("window.__pwned") is None
    installed.admin_call("stop", "ui-evil")
    installed.settle("ui-evil", "inactive")


def test_a_non_admin_key_sees_no_buttons_and_cannot_start_anything(
    browser: Browser, installed: Installed
) -> None:
    page = _page(browser, installed, installed.user)
    expect(page.locator("#who-name")).not_to_contain_text("admin")
    expect(page.locator("#models button.logs")).to_have_count(len(MODELS))
    for action in ("start", "stop", "stop-now"):
        expect(page.locator(f"#models button.{action}")).to_have_count(0)
    # nor does the session open the admin API by hand
    status = page.evaluate(
        "async () => (await fetch('/api/v1/models/ui-other/start', {method: 'POST'})).status"
    )
    assert status == 403
    assert installed.unit_state("ui-other") == "inactive"
    # signing out ends the session: the page asks for a key again
    page.locator("#sign-out").click()
    expect(page.locator("#login")).to_be_visible()
    _shots(page, "login")
    assert page.evaluate("async () => (await fetch('/ui/api/live')).status") == 401


@pytest.mark.parametrize("scheme", ["dark", "light"])
@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_the_page_fits_desktop_and_phone_width_in_dark_and_light(
    browser: Browser, installed: Installed, scheme: str, width: int, height: int
) -> None:
    page = _page(
        browser, installed, installed.admin, viewport={"width": width, "height": height}, color_scheme=scheme
    )
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    dark = background in ("rgb(17, 19, 24)",)
    assert dark == (scheme == "dark"), background
    for view in ("models", "logs", "playground"):
        page.locator(f"button.tab[data-view={view}]").click()
        expect(page.locator(f"#view-{view}")).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{view} scrolls sideways by {overflow}px at {width}px"
    page.locator("button.tab[data-view=models]").click()
    _shots(page, f"models-{'phone' if width < 700 else 'desktop'}-{scheme}")


def _shots(page: Page, name: str) -> None:
    """Keep a screenshot for docs/dashboard.md, in 64 colours: small enough to commit."""
    if SHOTS:
        from PIL import Image  # (matplotlib's dependency, a dev dependency)

        path = Path(SHOTS) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))
        with Image.open(path) as shot:
            small = shot.convert("RGB").quantize(colors=64)
        small.save(path, optimize=True)


def test_the_demo_finds_the_dashboard_where_the_root_redirects(installed: Installed) -> None:
    """What `sparkctl demo` prints (tools/demo.py), checked against an installed daemon here;
    tests/integration/test_demo.py sees it in the demo's own output."""
    from sparkctl.tools.demo import dashboard

    assert dashboard(installed.url) == f"{installed.url}/ui/"
