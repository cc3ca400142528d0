"""The issue's bar, end to end: ``gpubroker serve`` on the simulated cloud shows a live fleet on the
dashboard within a minute of a workload being submitted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.served import Served
from tests.web.conftest import VIEWPORT, screenshot


def test_a_submitted_workload_shows_on_the_dashboard_within_a_minute(browser: Any, home: Path) -> None:
    served = Served(home)
    try:
        served.wait_ready()
        key = (home / "admin-key").read_text().strip()
        body = {"name": "live", "gpu_types": ["H100"], "gpus_per_node": 8, "capacity": "spot"}
        response = httpx.post(served.url + "/v1/workloads", headers=served.headers, json=body, timeout=10)
        assert response.status_code == 201, response.text
        context = browser.new_context(base_url=served.url, viewport=VIEWPORT)
        page = context.new_page()
        page.goto("/login")
        page.fill("#api_key", key)
        page.click("button[type=submit]")
        page.wait_for_url("**/fleet")
        # The page polls every 10 s (serve's default): the fleet appears without any reload.
        page.wait_for_function(
            "() => Number(document.querySelector('[data-testid=gpus-running]').textContent) >= 8",
            timeout=60_000,
        )
        screenshot(page, "fleet-served")
        context.close()
    finally:
        served.stop()
