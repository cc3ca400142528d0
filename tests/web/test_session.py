"""Sign-in, the session cookie, page guards, the cancel form and static assets, without a browser."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from broker.db.engine import Database
from broker.db.fleet import WorkloadRow
from broker.services.tenancy import Role
from tests.api.conftest import Tenant
from tests.web.fleet import Fleet, seed
from web.pages import PAGES, VENDOR_CACHE, plotly_js
from web.session import SESSION_COOKIE, safe_next


def cookie(key: str) -> dict[str, str]:
    # TestClient speaks plain http to "testserver", where a client keeps no Secure cookie: send it by hand.
    return {"Cookie": f"{SESSION_COOKIE}={key}"}


@pytest.mark.parametrize("path", [p for p, _ in PAGES] + ["/workloads/wl_x"])
def test_pages_send_a_signed_out_browser_to_sign_in_and_back(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/login"
    assert safe_next(location.query.removeprefix("next=").replace("%2F", "/")) == path


def test_a_revoked_or_unknown_key_in_the_cookie_is_signed_out(client: TestClient, tenant: Tenant) -> None:
    response = client.get("/fleet", headers=cookie("gpb_0123456789abcdef_nope"), follow_redirects=False)
    assert response.status_code == 303
    ok = client.get("/fleet", headers=cookie(tenant.keys[Role.VIEWER]), follow_redirects=False)
    assert ok.status_code == 200
    assert "text/html" in ok.headers["content-type"]
    assert ok.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in ok.headers["content-security-policy"]


def test_sign_in_sets_a_secure_http_only_strict_cookie_holding_the_key(
    client: TestClient, tenant: Tenant
) -> None:
    key = tenant.keys[Role.VIEWER]
    response = client.post("/login", data={"api_key": key, "next": "/offers"}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/offers"
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith(f"{SESSION_COOKIE}={key};")
    attributes = {part.strip().lower() for part in set_cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes


def test_a_wrong_key_is_refused_and_sets_no_cookie(client: TestClient, tenant: Tenant) -> None:
    for wrong in ("", "not-a-key", tenant.keys[Role.VIEWER] + "x", "gpb_" + "a" * 300):
        response = client.post("/login", data={"api_key": wrong}, follow_redirects=False)
        assert response.status_code == 401, wrong
        assert "set-cookie" not in response.headers
        assert "unknown or revoked" in response.text


def test_a_sign_in_posted_from_another_site_is_refused(client: TestClient, tenant: Tenant) -> None:
    response = client.post(
        "/login",
        data={"api_key": tenant.keys[Role.ADMIN]},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_sign_in_never_redirects_off_the_site() -> None:
    for target in ("//evil.example/x", "https://evil.example", "/\\evil", "", None):
        assert safe_next(target) == "/fleet"
    assert safe_next("/workloads/wl_1?x=1") == "/workloads/wl_1?x=1"


def test_sign_out_clears_the_cookie(client: TestClient, tenant: Tenant) -> None:
    response = client.post("/logout", headers=cookie(tenant.keys[Role.VIEWER]), follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["set-cookie"].startswith(f'{SESSION_COOKIE}="";')


def test_the_api_takes_the_cookie_for_reads_only(client: TestClient, tenant: Tenant) -> None:
    admin = cookie(tenant.keys[Role.ADMIN])
    assert client.get("/v1/projects", headers=admin).status_code == 200
    assert client.head("/v1/instances", headers=admin).status_code in (200, 405)  # HEAD: no route is fine
    # A write with only the cookie is what a cross-site form would send: it must not authenticate.
    refused = client.post("/v1/projects", headers=admin, json={"name": "csrf"})
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith("/unauthorized")
    # A header still wins over the cookie (a script with its own key).
    other = client.get("/v1/projects", headers={**admin, "Authorization": "Bearer gpb_0123456789abcdef_x"})
    assert other.status_code == 401


def test_plotly_comes_from_the_installed_wheel_with_long_cache_headers(client: TestClient) -> None:
    path, version = plotly_js()
    response = client.get(f"/static/vendor/plotly-{version}.min.js")
    assert response.status_code == 200
    assert response.headers["cache-control"] == VENDOR_CACHE
    assert response.content == path.read_bytes()
    assert client.get("/static/vendor/plotly-0.0.1.min.js").status_code == 404


def test_own_assets_are_served_and_nothing_else(client: TestClient) -> None:
    css = client.get("/static/dashboard.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    for bad in ("/static/..%2Fpages.py", "/static/pages.py", "/static/.hidden.js", "/static/missing.js"):
        assert client.get(bad).status_code == 404, bad


def _seeded(database: Database) -> Fleet:
    from datetime import UTC, datetime

    return seed(database, datetime.now(UTC))


def test_only_operators_see_and_can_use_the_cancel_button(client: TestClient, database: Database) -> None:
    fleet = _seeded(database)
    wid = fleet.workloads["train"]
    viewer_page = client.get(f"/workloads/{wid}", headers=cookie(fleet.acme.keys[Role.VIEWER]))
    assert viewer_page.status_code == 200
    assert 'data-testid="cancel"' not in viewer_page.text
    operator_page = client.get(f"/workloads/{wid}", headers=cookie(fleet.acme.keys[Role.OPERATOR]))
    assert 'data-testid="cancel"' in operator_page.text

    refused = client.post(
        f"/workloads/{wid}/cancel", headers=cookie(fleet.acme.keys[Role.VIEWER]), follow_redirects=False
    )
    assert refused.headers["location"].endswith("?error=forbidden")
    cross_site = client.post(
        f"/workloads/{wid}/cancel",
        headers={**cookie(fleet.acme.keys[Role.OPERATOR]), "Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert cross_site.headers["location"].endswith("?error=forbidden")
    other_org = client.post(
        f"/workloads/{wid}/cancel", headers=cookie(fleet.globex.keys[Role.ADMIN]), follow_redirects=False
    )
    assert other_org.headers["location"].endswith("?error=not-found")
    with database.sessions() as s:
        assert s.get(WorkloadRow, wid).state == "RUNNING"  # type: ignore[union-attr]

    done = client.post(
        f"/workloads/{wid}/cancel", headers=cookie(fleet.acme.keys[Role.OPERATOR]), follow_redirects=False
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/workloads/{wid}"
    with database.sessions() as s:
        assert s.get(WorkloadRow, wid).state == "CANCELLED"  # type: ignore[union-attr]
