"""The shared REST helpers every HTTP adapter uses: transport errors, malformed bodies, JSON numbers."""

from __future__ import annotations

import socket
from decimal import Decimal

import httpx
import pytest

from broker.core.errors import Transient
from providers.http import backoff_delay, json_decimal, make_client, malformed_is_transient, send


def test_send_maps_a_refused_connection_to_transient() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(Transient) as raised:
        send(client, "GET", "/x", provider="demo", region="r1")
    assert (
        raised.value.provider == "demo" and raised.value.region == "r1" and raised.value.code == "transport"
    )
    client.close()


def test_send_returns_error_statuses_for_the_adapter_to_map() -> None:
    client = httpx.Client(
        transport=httpx.MockTransport(lambda request: httpx.Response(429)), base_url="http://x"
    )
    assert send(client, "GET", "/limited", provider="demo").status_code == 429


def test_malformed_is_transient_turns_a_missing_field_into_transient() -> None:
    @malformed_is_transient("demo")
    def parse(payload: dict[str, object]) -> object:
        return payload["data"]

    assert parse({"data": 1}) == 1
    with pytest.raises(Transient, match="malformed response in parse: KeyError") as raised:
        parse({})
    assert raised.value.provider == "demo" and raised.value.code == "bad-response"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("2.49"), Decimal("2.49")),
        (3, Decimal("3")),
        (1.5, Decimal("1.5")),
        ("0.25", Decimal("0.25")),
        (None, None),
        (True, None),
        ("", None),
        ("cheap", None),
        ("NaN", None),
        (float("inf"), None),
    ],
)
def test_json_decimal(value: object, expected: Decimal | None) -> None:
    assert json_decimal(value) == expected


def test_backoff_doubles_up_to_its_longest_and_jitter_only_shortens() -> None:
    assert [backoff_delay(n, 1.0, 30.0, 0.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(10_000, 1.0, 30.0, 0.0) == 30  # no overflow however long it fails
    delays = [backoff_delay(3, 1.0, 30.0, 0.2) for _ in range(200)]
    assert all(3.2 <= d <= 4.0 for d in delays) and len(set(delays)) > 1
