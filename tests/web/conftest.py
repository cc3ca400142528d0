"""Browser-test fixtures: the app served by uvicorn on a free port, a seeded fleet, and Chromium.

The browser is Debian's Chromium (``/usr/bin/chromium``, or ``$GPUBROKER_CHROMIUM``) driven by
Playwright; Playwright's own browser download is never used. Without a Chromium binary the browser
tests skip with a message saying how to install one; everything else here still runs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from broker.db.engine import Database
from tests.api.conftest import client, other_tenant, tenant  # noqa: F401 - the API tests' fixtures, shared
from tests.served import free_port
from tests.web.fleet import Fleet, seed

CHROMIUM = Path(os.environ.get("GPUBROKER_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
REFRESH_SECONDS = 0.5  # fast polling, so an update shows within a second or two
VIEWPORT = {"width": 1366, "height": 768}


@dataclass
class Dashboard:
    """The app being served: its URL, the app (for its state), and an API client for the same data."""

    url: str
    app: FastAPI

    def api(self, path: str, key: str, **params: Any) -> Any:
        response = httpx.get(self.url + path, headers={"Authorization": f"Bearer {key}"}, params=params)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def fleet(database: Database, now: datetime) -> Fleet:
    return seed(database, now)


@pytest.fixture
def dashboard(database: Database, now: datetime) -> Iterator[Dashboard]:
    """``create_app`` on the test database, served by uvicorn in a thread on 127.0.0.1.

    Its clock stands still at ``now`` (the fleet's seeding time), so spend and price ages are the
    same when the page reads them and when the test asks the API."""
    app = create_app(database, clock=lambda: now)
    app.state.web_refresh_seconds = REFRESH_SECONDS
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="dashboard-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.02)
    yield Dashboard(f"http://127.0.0.1:{port}", app)
    server.should_exit = True
    thread.join(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Not for the whole session: Playwright's sync API keeps an asyncio
    loop running on the main thread while it is started, and later tests that call asyncio.run fail."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install it (apt-get install -y chromium; .ci/run does) "
            "or set GPUBROKER_CHROMIUM to a Chromium binary"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def browser_errors() -> list[str]:
    """Script errors and failed loads the page reported; a test that expects one (a 401) removes it."""
    return []


@pytest.fixture
def page(browser: Any, dashboard: Dashboard, browser_errors: list[str]) -> Iterator[Any]:
    """A fresh browser context (no cookies) at laptop size, pointed at the dashboard; script errors fail."""
    context = browser.new_context(base_url=dashboard.url, viewport=VIEWPORT)
    page = context.new_page()
    errors = browser_errors
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(15_000)
    yield page
    context.close()
    # A 401 while signing out or a CSP refusal shows up as a console error: none is expected.
    assert not errors, f"browser errors: {errors}"


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, key: str, path: str = "/fleet") -> None:
    page.goto(path)
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")


def drawn(page: Any) -> None:
    """Wait until the page has drawn from the API at least once."""
    page.wait_for_function("() => Number(document.body.dataset.refreshes || 0) >= 1")


def refreshed(page: Any, times: int = 1) -> None:
    """Wait until the page has drawn ``times`` more times from the API than it had when called."""
    start = int(page.evaluate("Number(document.body.dataset.refreshes || 0)"))
    # A function, not a string: the pages' CSP forbids eval, and Playwright evaluates strings with it.
    page.wait_for_function("(n) => Number(document.body.dataset.refreshes || 0) >= n", arg=start + times)
