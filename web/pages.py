"""The dashboard's routes: sign-in, the HTML page shells, the one write (cancel) and static assets (reads
the database to verify keys; the pages' numbers come from the JSON API, which their scripts poll).

Every page is a Jinja2 shell with no figures in it: its script reads ``/v1/...`` with the session
cookie (accepted by the API for GET and HEAD only), so the dashboard never becomes a second source
of truth, and every view sees exactly what the key's organization and role may see.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

import broker
from broker.services import workloads as workload_service
from broker.services.lifecycle import Topic
from broker.services.tenancy import Principal, Role
from web.session import (
    MAX_KEY_LENGTH,
    clear_session,
    principal_from_cookie,
    safe_next,
    same_origin,
    set_session,
    verify_key,
)

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
DEFAULT_REFRESH_SECONDS = 10.0
MAX_FORM_BYTES = 4096  # a sign-in form is one key: anything bigger is not ours
# Our own assets change with the package version (their URLs carry it); an hour is safe either way.
OWN_ASSET_CACHE = "public, max-age=3600"
# plotly.js's URL names its version, so a browser may keep it forever: the next version is a new URL.
VENDOR_CACHE = "public, max-age=31536000, immutable"
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # Scripts only from this site (plotly.js included: no CDN); plotly sets inline styles on its SVG.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
_CONTENT_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

# The pages in the navigation, in order: (path, title).
PAGES = (
    ("/fleet", "Fleet"),
    ("/cost", "Cost"),
    ("/commitments", "Commitments"),
    ("/workloads", "Workloads"),
    ("/offers", "Offers"),
    ("/reports", "Reports"),
)

templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)


@functools.cache
def plotly_js() -> tuple[Path, str]:
    """The ``plotly.min.js`` shipped inside the installed plotly wheel, and plotly's version.

    Found without importing plotly (its Python side is not needed, and is slow to import)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed: pip install plotly")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "package_data" / "plotly.min.js", importlib.metadata.version("plotly")


def _refresh_seconds(request: Request) -> float:
    return float(getattr(request.app.state, "web_refresh_seconds", DEFAULT_REFRESH_SECONDS))


def _render(
    request: Request, template: str, principal: Principal | None, status: int = 200, **ctx: Any
) -> Response:
    _, plotly_version = plotly_js()
    context = {
        "principal": principal,
        "is_operator": principal is not None and principal.role.covers(Role.OPERATOR),
        "pages": PAGES,
        "current": request.url.path,
        "version": broker.__version__,
        "plotly_version": plotly_version,
        "refresh_seconds": _refresh_seconds(request),
        **ctx,
    }
    return templates.TemplateResponse(request, template, context, status_code=status, headers=_PAGE_HEADERS)


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _page(request: Request, template: str, **ctx: Any) -> Response:
    principal = principal_from_cookie(request)
    if principal is None:
        return _to_login(request)
    return _render(request, template, principal, **ctx)


@router.get("/")
def home(request: Request) -> Response:
    return RedirectResponse("/fleet" if principal_from_cookie(request) else "/login", status_code=303)


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    return _render(request, "login.html", None, next=safe_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    """Verify the key from the form and keep it in the session cookie; 401 with the form again if not."""
    if not same_origin(request):
        return _render(
            request, "login.html", None, 403, next="/fleet", error="This form was posted from another site."
        )
    body = await request.body()
    form = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace")) if len(body) <= MAX_FORM_BYTES else {}
    key = (form.get("api_key") or [""])[0].strip()
    target = safe_next((form.get("next") or [None])[0])
    if not key or len(key) > MAX_KEY_LENGTH or verify_key(request, key) is None:
        return _render(
            request, "login.html", None, 401, next=target, error="That API key is unknown or revoked."
        )
    response = RedirectResponse(target, status_code=303)
    set_session(response, key)
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    if same_origin(request):
        clear_session(response)
    return response


@router.get("/fleet")
def fleet(request: Request) -> Response:
    return _page(request, "fleet.html", title="Fleet")


@router.get("/cost")
def cost(request: Request) -> Response:
    return _page(request, "cost.html", title="Cost")


@router.get("/commitments")
def commitments(request: Request) -> Response:
    return _page(request, "commitments.html", title="Commitments")


@router.get("/workloads")
def workloads(request: Request) -> Response:
    return _page(request, "workloads.html", title="Workloads")


@router.get("/workloads/{workload_id}")
def workload(request: Request, workload_id: str) -> Response:
    return _page(request, "workload.html", title="Workload", workload_id=workload_id[:64])


@router.post("/workloads/{workload_id}/cancel")
def cancel_workload(request: Request, workload_id: str) -> Response:
    """The dashboard's one write, for operators: a form post, so it cannot ride on the API's cookie
    support (GET/HEAD only); the cookie is SameSite=Strict and the origin is checked (CSRF)."""
    principal = principal_from_cookie(request)
    if principal is None:
        return _to_login(request)
    back = f"/workloads/{quote(workload_id[:64], safe='')}"
    if not same_origin(request) or not principal.role.covers(Role.OPERATOR):
        return RedirectResponse(back + "?error=forbidden", status_code=303)
    now = request.app.state.clock()
    try:
        with request.app.state.database.sessions.begin() as session:
            workload_service.cancel(session, principal.org_id, workload_id, now, "from the dashboard")
    except workload_service.WorkloadError as exc:
        return RedirectResponse(f"{back}?error={quote(exc.kind)}", status_code=303)
    if request.app.state.wake is not None:
        request.app.state.wake(Topic.EXECUTE)
    return RedirectResponse(back, status_code=303)


@router.get("/offers")
def offers(request: Request) -> Response:
    return _page(request, "offers.html", title="Offers")


@router.get("/reports")
def reports(request: Request) -> Response:
    return _page(request, "reports.html", title="Reports")


@router.get("/static/vendor/plotly-{version}.min.js")
def plotly_asset(version: str) -> Response:
    path, installed = plotly_js()
    if version != installed or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type=_CONTENT_TYPES[".js"], headers={"Cache-Control": VENDOR_CACHE})


@router.get("/static/{name}")
def own_asset(name: str) -> Response:
    # Only the files that are there by name: no paths, so nothing outside the folder is reachable.
    path = STATIC_DIR / name
    if "/" in name or name.startswith(".") or path.suffix not in _CONTENT_TYPES or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(
        path, media_type=_CONTENT_TYPES[path.suffix], headers={"Cache-Control": OWN_ASSET_CACHE}
    )


def install(app: FastAPI, refresh_seconds: float = DEFAULT_REFRESH_SECONDS) -> None:
    """Mount the dashboard on ``app``; its pages poll the API every ``refresh_seconds``."""
    app.state.web_refresh_seconds = refresh_seconds
    app.include_router(router)


__all__ = ["DEFAULT_REFRESH_SECONDS", "PAGES", "install", "plotly_js", "router"]
