"""A small local HTTP server for faking a provider's REST API in tests (does I/O on 127.0.0.1 only).

A fake registers routes that answer with the provider's documented JSON and error bodies.
Tests script it through a call log, injected responses (the next N matching requests get a
canned answer: a 429 with Retry-After, a 5xx, the provider's capacity error) and lost responses
(the request is handled — the VM is created — but the connection closes before the answer, as
when a client times out).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class FakeRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # named groups of the route pattern

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class FakeResponse:
    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        if isinstance(self.body, bytes):
            return self.body, self.headers
        headers = {"Content-Type": "application/json", **self.headers}
        return (b"" if self.body is None else json.dumps(self.body).encode()), headers


Handler = Callable[[FakeRequest], FakeResponse]


@dataclass
class _Injection:
    method: str
    pattern: re.Pattern[str]
    response: FakeResponse | None  # None: handle normally, then drop the connection
    remaining: int


class FakeHTTPServer:
    """Routes (method + path regex) to handlers; records every request; scriptable failures."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._injections: list[_Injection] = []
        self._lock = threading.Lock()
        self.requests: list[FakeRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- set-up -------------------------------------------------------------------------------
    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self._routes.append((method.upper(), re.compile(pattern + r"\Z"), handler))
            return handler

        return register

    def start(self) -> str:
        fake = self

        class _RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _handle(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815 - stdlib names

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _RequestHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- scripting ----------------------------------------------------------------------------
    def inject(self, method: str, pattern: str, response: FakeResponse, times: int = 1) -> None:
        """The next ``times`` requests matching method+path get ``response`` instead of the handler's."""
        with self._lock:
            self._injections.append(_Injection(method.upper(), re.compile(pattern + r"\Z"), response, times))

    def lose_response(self, method: str, pattern: str, times: int = 1) -> None:
        """The next matching requests are handled (side effects happen) but never answered."""
        with self._lock:
            self._injections.append(_Injection(method.upper(), re.compile(pattern + r"\Z"), None, times))

    def calls(self, method: str, pattern: str) -> list[FakeRequest]:
        regex = re.compile(pattern + r"\Z")
        return [r for r in self.requests if r.method == method.upper() and regex.match(r.path)]

    # --- serving ------------------------------------------------------------------------------
    def _take_injection(self, method: str, path: str) -> _Injection | None:
        with self._lock:
            for injection in self._injections:
                if injection.method == method and injection.pattern.match(path) and injection.remaining > 0:
                    injection.remaining -= 1
                    return injection
        return None

    def _dispatch(self, http: BaseHTTPRequestHandler) -> None:
        split = urlsplit(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        request = FakeRequest(
            method=http.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in http.headers.items()},
            body=body,
        )
        with self._lock:
            self.requests.append(request)
        injection = self._take_injection(request.method, request.path)
        if injection is not None and injection.response is not None:
            self._send(http, injection.response)
            return
        response = self._route(request)
        if injection is not None:  # lost response: the work is done, the answer never arrives
            http.close_connection = True
            http.connection.shutdown(2)
            return
        self._send(http, response)

    def _route(self, request: FakeRequest) -> FakeResponse:
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if method == request.method and match:
                request.params = {k: v for k, v in match.groupdict().items() if v is not None}
                return handler(request)
        return FakeResponse(404, {"error": f"fake has no route for {request.method} {request.path}"})

    @staticmethod
    def _send(http: BaseHTTPRequestHandler, response: FakeResponse) -> None:
        payload, headers = response.encoded()
        http.send_response(response.status)
        for name, value in headers.items():
            http.send_header(name, value)
        http.send_header("Content-Length", str(len(payload)))
        http.end_headers()
        http.wfile.write(payload)
