"""The API edge: request ids, the body-size limit, the per-key rate limit and the JSON access log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Viewer
from api.middleware import RateLimiter, install
from broker.db.engine import Database
from broker.logs import SECRET_BEARING_LOGGERS, configure_logging, request_id
from broker.settings import Settings
from tests.api.conftest import NOW, Tenant
from web.session import SESSION_COOKIE

LIMIT = 1024
KEY_A = "gpb_0123456789abcdef_secret-of-key-a"
KEY_B = "gpb_fedcba9876543210_secret-of-key-b"
_log = logging.getLogger("tests.edge")


class Monotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def edge_app(database: Database, clock: Monotonic, *, rate: float = 1000.0, burst: int = 1000) -> FastAPI:
    """The real app plus a few tiny routes, behind the edge middleware."""
    app = create_app(database, clock=lambda: NOW)
    app.state.echo_calls = 0

    @app.post("/test/echo")
    def echo(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        request.app.state.echo_calls += 1
        return body

    @app.post("/test/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/test/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    @app.get("/test/whoami/{thing_id}")
    def whoami(thing_id: str, principal: Viewer) -> dict[str, str]:
        _log.info("looked at %s", thing_id)
        return {"key_id": principal.key_id}

    @app.get("/test/leaky")
    def leaky(request: Request) -> dict[str, str]:  # a sync route: runs on a worker thread
        presented = request.headers["authorization"].removeprefix("Bearer ")
        _log.warning("caller presented %s", presented)
        _log.warning(f"raw header was Authorization: Bearer {presented}")
        _log.info("db at postgresql://gpubroker:hunter2@db:5432/gpubroker?password=hunter3")
        _log.info("signing with", extra={"conf": f"aws_secret_access_key={'A' * 40}"})
        return {"ok": "yes"}

    @app.get("/test/boom")
    def boom() -> None:
        raise RuntimeError(f"could not use {KEY_A}")

    @app.get("/test/async-leaky")
    async def async_leaky(request: Request) -> dict[str, str]:
        _log.warning("async route saw %s", request.headers["x-api-key"])
        return {"ok": "yes"}

    install(
        app,
        Settings(max_body_bytes=LIMIT, rate_limit_per_second=rate, rate_limit_burst=burst),
        monotonic=clock,
    )
    return app


@pytest.fixture
def clock() -> Monotonic:
    return Monotonic()


@pytest.fixture
def edge(database: Database, clock: Monotonic) -> Iterator[TestClient]:
    with TestClient(edge_app(database, clock)) as c:
        yield c


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """JSON logging into a buffer; logging is process-global, so everything is put back after."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    names = ("alembic.runtime.migration", *SECRET_BEARING_LOGGERS)
    saved_levels = {name: logging.getLogger(name).level for name in names}
    buffer = io.StringIO()
    handler = configure_logging("info", "json", stream=buffer)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in saved_levels.items():  # SDK loggers too: later tests read their records
            logging.getLogger(name).setLevel(level)


def _records(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


# --- request id ---------------------------------------------------------------------------------


def test_a_sane_request_id_is_echoed(edge: TestClient) -> None:
    response = edge.get("/healthz", headers={"X-Request-ID": "abc.DEF-123_x"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc.DEF-123_x"
    longest = "a" * 128
    assert edge.get("/healthz", headers={"X-Request-ID": longest}).headers["x-request-id"] == longest


@pytest.mark.parametrize("given", [None, "", "has spaces", "semi;colon", "a/b", "<script>", "a" * 129])
def test_a_missing_or_odd_request_id_is_replaced_by_a_new_one(edge: TestClient, given: str | None) -> None:
    headers = {} if given is None else {"X-Request-ID": given}
    first = edge.get("/healthz", headers=headers).headers["x-request-id"]
    second = edge.get("/healthz", headers=headers).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", first) and re.fullmatch(r"[0-9a-f]{16}", second)
    assert first != second


def test_error_responses_carry_the_request_id_too(edge: TestClient) -> None:
    response = edge.get("/v1/no-such-thing", headers={"X-Request-ID": "req-404"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "req-404"


# --- body limit ---------------------------------------------------------------------------------


def test_a_body_within_the_limit_is_served(edge: TestClient) -> None:
    body = {"pad": "x" * (LIMIT - 20)}
    assert len(json.dumps(body)) <= LIMIT
    response = edge.post("/test/echo", json=body)
    assert response.status_code == 200 and response.json() == body


def test_a_content_length_over_the_limit_is_refused_before_the_route_runs(edge: TestClient) -> None:
    response = edge.post("/test/echo", json={"pad": "x" * LIMIT}, headers={"X-Request-ID": "big-1"})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "big-1"
    problem = response.json()
    assert problem["type"] == "https://gpubroker.dev/problems/payload-too-large"
    assert problem["status"] == 413 and str(LIMIT) in problem["detail"]
    assert edge.app.state.echo_calls == 0  # type: ignore[attr-defined]


def test_a_chunked_body_that_grows_past_the_limit_is_refused(edge: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"pad": "'
        for _ in range(4):
            yield b"x" * 512
        yield b'"}'

    response = edge.post("/test/echo", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413  # without a Content-Length: counted while streaming
    assert response.json()["type"].endswith("/payload-too-large")
    assert edge.app.state.echo_calls == 0  # type: ignore[attr-defined]
    small = edge.post("/test/raw", content=iter([b"abc", b"def"]))
    assert small.status_code == 200 and small.json() == {"bytes": 6}


def test_a_streamed_body_is_not_read_past_the_limit(database: Database, clock: Monotonic) -> None:
    """Drive the ASGI app by hand: the server offers 10 chunks of 400 bytes, limit 1024."""
    app = edge_app(database, clock)
    offered = 10
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"y" * 400, "more_body": pulled < offered}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/test/raw",
        "raw_path": b"/test/raw",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert pulled == 3  # 400 + 400 + 400 > 1024: the third chunk is the last one read
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body)["type"].endswith("/payload-too-large")


# --- rate limit ---------------------------------------------------------------------------------


def test_a_key_over_its_burst_gets_429_with_retry_after(database: Database, clock: Monotonic) -> None:
    with TestClient(edge_app(database, clock, rate=0.5, burst=3)) as client:
        a = {"Authorization": f"Bearer {KEY_A}"}
        assert [client.get("/test/ping", headers=a).status_code for _ in range(3)] == [200, 200, 200]
        refused = client.get("/test/ping", headers=a)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "https://gpubroker.dev/problems/rate-limited"
        assert refused.headers["retry-after"] == "2"  # one token every 2 s
        assert "x-request-id" in refused.headers
        clock.now += 1.0
        assert client.get("/test/ping", headers=a).status_code == 429  # retrying early costs nothing...
        clock.now += 1.0
        assert client.get("/test/ping", headers=a).status_code == 200  # ...and waiting as told works
        assert client.get("/test/ping", headers=a).status_code == 429


def test_retry_after_is_a_whole_second_at_least(database: Database, clock: Monotonic) -> None:
    with TestClient(edge_app(database, clock, rate=50.0, burst=1)) as client:
        assert client.get("/test/ping").status_code == 200
        refused = client.get("/test/ping")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"


def test_keys_are_limited_independently(database: Database, clock: Monotonic) -> None:
    with TestClient(edge_app(database, clock, rate=1.0, burst=2)) as client:
        a = {"Authorization": f"Bearer {KEY_A}"}
        for _ in range(2):
            client.get("/test/ping", headers=a)
        assert client.get("/test/ping", headers=a).status_code == 429
        # The same key sent as X-API-Key is the same caller...
        assert client.get("/test/ping", headers={"X-API-Key": KEY_A}).status_code == 429
        # ...while another key, and a caller without a key (limited by address), are not held back.
        assert client.get("/test/ping", headers={"Authorization": f"Bearer {KEY_B}"}).status_code == 200
        assert client.get("/test/ping", headers={"X-API-Key": KEY_B}).status_code == 200
        assert client.get("/test/ping").status_code == 200


def test_a_dashboard_session_is_limited_as_its_key_not_as_its_address(
    database: Database, clock: Monotonic
) -> None:
    with TestClient(edge_app(database, clock, rate=1.0, burst=2)) as client:
        session_a = {"Cookie": f"theme=dark; {SESSION_COOKIE}={KEY_A}"}
        for _ in range(2):
            assert client.get("/test/ping", headers=session_a).status_code == 200
        assert client.get("/test/ping", headers=session_a).status_code == 429
        # The same key as a header is the same caller; another signed-in key behind the same
        # address, and a caller with other cookies only (limited by address), are not held back.
        assert client.get("/test/ping", headers={"Authorization": f"Bearer {KEY_A}"}).status_code == 429
        assert client.get("/test/ping", headers={"Cookie": f"{SESSION_COOKIE}={KEY_B}"}).status_code == 200
        assert client.get("/test/ping", headers={"Cookie": "theme=dark"}).status_code == 200


def test_probes_and_metrics_are_never_rate_limited(database: Database, clock: Monotonic) -> None:
    with TestClient(edge_app(database, clock, rate=1.0, burst=1)) as client:
        assert client.get("/test/ping").status_code == 200
        assert client.get("/test/ping").status_code == 429
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
            assert client.get("/metrics").status_code == 200
        assert client.get("/test/ping").status_code == 429


def test_installing_again_replaces_the_edge_instead_of_stacking_two(
    database: Database, clock: Monotonic, log_lines: io.StringIO
) -> None:
    """create_app installs the edge with the server's settings; a test installs it again with its own."""
    app = edge_app(database, clock, rate=1.0, burst=1)
    install(app, Settings(rate_limit_per_second=1.0, rate_limit_burst=3), monotonic=clock)
    with TestClient(app) as client:
        assert [client.get("/test/ping").status_code for _ in range(4)] == [200, 200, 200, 429]
        metrics = client.get("/metrics").text
    access = [r for r in _records(log_lines) if r["logger"] == "gpubroker.access"]
    assert len(access) == 5  # one line per request, not two
    assert 'gpubroker_http_requests_total{method="GET",route="/test/ping",status="200"} 3.0' in metrics


def test_the_limiter_forgets_idle_callers_and_stays_bounded() -> None:
    clock = Monotonic()
    limiter = RateLimiter(rate=1.0, burst=2, monotonic=clock, max_callers=50)
    assert limiter.take(b"a") == 0.0 and limiter.take(b"a") == 0.0
    assert limiter.take(b"a") == pytest.approx(1.0)  # empty: one token in a second
    for n in range(500):  # a flood of new callers never grows the table past its bound
        limiter.take(f"caller-{n}".encode())
        assert len(limiter) <= 50
    clock.now += 2.0  # everyone's bucket is full again: forgetting them changes nothing
    limiter.take(b"newcomer")
    assert len(limiter) == 1
    assert limiter.take(b"a") == 0.0  # a forgotten caller starts with a full burst, as it had


def test_a_busy_caller_is_not_forgotten_by_the_idle_sweep() -> None:
    clock = Monotonic()
    limiter = RateLimiter(rate=1.0, burst=2, monotonic=clock)
    limiter.take(b"idle")
    clock.now += 1.5
    for _ in range(3):
        limiter.take(b"busy")  # empty now
    clock.now += 1.0  # "idle" is full again, "busy" is not
    limiter.take(b"newcomer")  # a new caller after the sweep interval: sweeps
    assert len(limiter) == 2
    assert limiter.take(b"busy") == 0.0  # it earned one token in that second...
    assert limiter.take(b"busy") > 0.0  # ...and only one: its state was kept


# --- access log and request-scoped logging ------------------------------------------------------


def test_one_json_access_line_per_request_with_route_status_and_key_id(
    edge: TestClient, tenant: Tenant, log_lines: io.StringIO
) -> None:
    response = edge.get("/test/whoami/th_42", headers={**tenant.viewer, "X-Request-ID": "req-who"})
    assert response.status_code == 200
    key_id = response.json()["key_id"]
    records = _records(log_lines)
    route_line = next(r for r in records if r["logger"] == "tests.edge")
    assert route_line["msg"] == "looked at th_42" and route_line["request_id"] == "req-who"
    [access] = [r for r in records if r["logger"] == "gpubroker.access"]
    assert access["level"] == "INFO" and access["request_id"] == "req-who"
    assert access["method"] == "GET" and access["status"] == 200
    assert access["path"] == "/test/whoami/th_42" and access["route"] == "/test/whoami/{thing_id}"
    assert access["key_id"] == key_id and access["org_id"] == tenant.org_id
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", access["ts"])
    text = log_lines.getvalue()
    assert tenant.keys["viewer"] not in text and "authorization" not in text.lower()


def test_refusals_are_logged_with_their_route_and_no_key(
    database: Database, clock: Monotonic, log_lines: io.StringIO
) -> None:
    with TestClient(edge_app(database, clock, rate=1.0, burst=1)) as client:
        a = {"Authorization": f"Bearer {KEY_A}"}
        client.get("/test/whoami/x1", headers=a)
        client.get("/test/whoami/x2", headers=a)
    access = [r for r in _records(log_lines) if r["logger"] == "gpubroker.access"]
    assert [(r["status"], r["route"]) for r in access] == [
        (401, "/test/whoami/{thing_id}"),
        (429, "/test/whoami/{thing_id}"),
    ]
    assert "key_id" not in access[0]  # the key was unknown: nobody was authenticated
    assert "secret-of-key-a" not in log_lines.getvalue()


def test_log_lines_name_the_request_and_never_show_a_key(edge: TestClient, log_lines: io.StringIO) -> None:
    response = edge.get("/test/leaky", headers={"Authorization": f"Bearer {KEY_A}", "X-Request-ID": "r-1"})
    assert response.status_code == 200
    response = edge.get("/test/async-leaky", headers={"X-API-Key": KEY_B, "X-Request-ID": "r-2"})
    assert response.status_code == 200
    text = log_lines.getvalue()
    for secret in ("secret-of-key-a", "secret-of-key-b", "hunter2", "hunter3", "A" * 40):
        assert secret not in text, secret
    records = [r for r in _records(log_lines) if r["logger"] == "tests.edge"]
    assert len(records) == 5
    assert [r["request_id"] for r in records] == ["r-1"] * 4 + ["r-2"]
    assert records[0]["msg"] == "caller presented gpb_0123456789abcdef_[REDACTED]"
    assert records[1]["msg"] == "raw header was Authorization: Bearer [REDACTED]"
    assert "postgresql://gpubroker:[REDACTED]@db:5432" in records[2]["msg"]
    assert records[3]["conf"] == "aws_secret_access_key=[REDACTED]"
    assert records[4]["msg"] == "async route saw gpb_fedcba9876543210_[REDACTED]"


def test_the_request_id_is_unset_once_the_request_is_answered(database: Database, clock: Monotonic) -> None:
    app = edge_app(database, clock)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def serve() -> tuple[str | None, str | None]:
        before = request_id.get()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/healthz",
            "raw_path": b"/healthz",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), (b"x-request-id", b"r-done")],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "state": {},
        }
        await app(scope, receive, send)
        return before, request_id.get()  # the same task: a leaked id would still be set

    assert asyncio.run(serve()) == (None, None)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert (b"x-request-id", b"r-done") in start["headers"]


def test_an_unhandled_error_answers_500_with_the_request_id_and_logs_it_under_that_id(
    database: Database, clock: Monotonic, log_lines: io.StringIO
) -> None:
    with TestClient(edge_app(database, clock), raise_server_exceptions=False) as client:
        response = client.get("/test/boom", headers={"X-Request-ID": "r-boom"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "r-boom"
    assert response.json()["type"] == "https://gpubroker.dev/problems/internal-error"
    records = _records(log_lines)
    [error] = [r for r in records if r["logger"] == "api.errors"]
    assert error["level"] == "ERROR" and error["request_id"] == "r-boom"
    assert "RuntimeError: could not use gpb_0123456789abcdef_[REDACTED]" in error["exc_info"]
    [access] = [r for r in records if r["logger"] == "gpubroker.access"]
    assert access["status"] == 500 and access["route"] == "/test/boom"
    assert "secret-of-key-a" not in log_lines.getvalue()
