"""Report test fixtures: a local SMTP server (aiosmtpd), a scriptable local webhook, the API tenants."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.api.conftest import client, other_tenant, tenant  # noqa: F401  (fixtures for the API tests)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    """An aiosmtpd handler that keeps every message; ``refuse`` answers that many DATA with 451 first."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.recipients: list[list[str]] = []
        self.refuse = 0
        self.tries = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.tries += 1
        if self.refuse > 0:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        self.messages.append(message_from_bytes(envelope.content))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


class Webhook:
    """A local HTTP endpoint answering with the statuses in ``script`` (the last one repeats)."""

    def __init__(self, script: list[int]) -> None:
        self.script = script
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def next_status(self, body: dict[str, Any]) -> int:
        with self.lock:
            self.bodies.append(body)
            return self.script[min(len(self.bodies), len(self.script)) - 1]


@pytest.fixture
def webhook() -> Iterator[tuple[str, Webhook]]:
    hook = Webhook([200])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            status = hook.next_status(json.loads(self.rfile.read(length)))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/B000/secret-token", hook
    finally:
        server.shutdown()
        server.server_close()
