"""Local fake instance metadata services (AWS IMDSv2, GCE, Azure IMDS Scheduled Events) on a real
socket, answering with the documented paths, headers and bodies (test helper, does I/O)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class FakeMetadata:
    """One cloud's metadata service. Tests arm a notice by setting ``action`` (AWS), ``preempted``
    (GCP) or ``events`` (Azure); ``delay`` makes every answer late (timeouts); ``status`` forces one."""

    cloud: str
    action: dict[str, str] | None = None  # AWS spot/instance-action body; None: 404
    raw_action: str | None = None  # AWS: served as the instance-action body as is (malformed ones)
    preempted: bool = False  # GCP
    events: list[dict[str, Any]] = field(default_factory=list)  # Azure
    vm_name: str = "gpu-node-7"
    token: str = "AQAEAFakeToken=="
    delay: float = 0.0
    status: int | None = None  # answer every notice request with this status
    requests: list[Seen] = field(default_factory=list)
    incarnation: int = 1

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._serve(self, "GET")

            def do_PUT(self) -> None:
                fake._serve(self, "PUT")

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def notice_requests(self) -> list[Seen]:
        return [r for r in self.requests if r.method == "GET" and "name" not in r.path]

    # --- answers ---------------------------------------------------------------------------------
    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        seen = Seen(
            method, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in handler.headers.items()}
        )
        self.requests.append(seen)
        if self.delay:
            time.sleep(self.delay)
        status, body, content_type = getattr(self, f"_{self.cloud}")(seen)
        data = body.encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def _aws(self, seen: Seen) -> tuple[int, str, str]:
        if seen.method == "PUT" and seen.path == "/latest/api/token":
            ttl = seen.headers.get("x-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return 400, "", "text/plain"
            return 200, self.token, "text/plain"
        if seen.method == "GET" and seen.path == "/latest/meta-data/spot/instance-action":
            if seen.headers.get("x-aws-ec2-metadata-token") != self.token:
                return 401, "", "text/plain"  # IMDSv2 required: no or a stale token
            if self.status is not None:
                return self.status, "", "text/plain"
            if self.raw_action is not None:
                return 200, self.raw_action, "text/plain"
            if self.action is None:
                return 404, _AWS_404, "text/html"
            return 200, json.dumps(self.action), "text/plain"
        return 404, _AWS_404, "text/html"

    def _gcp(self, seen: Seen) -> tuple[int, str, str]:
        if seen.path != "/computeMetadata/v1/instance/preempted":
            return 404, "Not Found", "text/html"
        if seen.headers.get("metadata-flavor") != "Google" or "x-forwarded-for" in seen.headers:
            return 403, "Missing Metadata-Flavor:Google header.", "text/html"
        if self.status is not None:
            return self.status, "", "text/plain"
        return 200, "TRUE" if self.preempted else "FALSE", "application/text"

    def _azure(self, seen: Seen) -> tuple[int, str, str]:
        if seen.headers.get("metadata") != "true":
            body = {"error": "Bad request. Required metadata header not specified"}
            return 400, json.dumps(body), "application/json"
        if "api-version" not in seen.query:
            body = {"error": "Bad request. api-version was not specified in the request."}
            return 400, json.dumps(body), "application/json"
        if seen.path == "/metadata/instance/compute/name" and seen.query.get("format") == ["text"]:
            return 200, self.vm_name, "text/plain"
        if seen.path != "/metadata/scheduledevents":
            return 404, json.dumps({"error": "Not found"}), "application/json"
        if self.status is not None:
            return self.status, "", "application/json"
        body = {"DocumentIncarnation": self.incarnation, "Events": self.events}
        return 200, json.dumps(body), "application/json"


_AWS_404 = (
    '<?xml version="1.0" encoding="iso-8859-1"?>\n<!DOCTYPE html>\n<html><head><title>404 - Not Found'
    "</title></head><body><h1>404 - Not Found</h1></body></html>\n"
)


def azure_preempt(resources: list[str], not_before: str = "Mon, 19 Sep 2016 18:29:47 GMT") -> dict[str, Any]:
    """A Scheduled Events ``Preempt`` event in the documented shape."""
    return {
        "EventId": "602d9444-d2cd-49c7-8624-8643e7171297",
        "EventType": "Preempt",
        "ResourceType": "VirtualMachine",
        "Resources": resources,
        "EventStatus": "Scheduled",
        "NotBefore": not_before,
        "Description": "",
        "EventSource": "Platform",
        "DurationInSeconds": -1,
    }
