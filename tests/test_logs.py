"""Logging: JSON lines with the request id, the human text format, redaction of credentials."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from broker.logs import MASK, SECRET_BEARING_LOGGERS, configure_logging, redact, request_id

KEY = "gpb_0123456789abcdef_Zm9vYmFyLWJhei1xdXV4LXNlY3JldA"
SECRET = KEY.rsplit("_", 1)[1]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Logging is process-global: put back every handler and level a test changes."""
    root = logging.getLogger()
    names = ("alembic.runtime.migration", *SECRET_BEARING_LOGGERS)
    saved_levels = {name: logging.getLogger(name).level for name in names}
    saved_root, saved_handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_root)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


def _configured(fmt: str = "json", level: str = "debug") -> io.StringIO:
    buffer = io.StringIO()
    configure_logging(level, fmt, stream=buffer)
    return buffer


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_time_level_logger_message_and_extras() -> None:
    buffer = _configured()
    logging.getLogger("gpubroker.test").info(
        "placed %s on %s",
        "wl_1",
        "aws",
        extra={"workload_id": "wl_1", "price": Decimal("2.50"), "at": datetime(2026, 1, 2, tzinfo=UTC)},
    )
    [line] = _lines(buffer)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    assert line["level"] == "INFO" and line["logger"] == "gpubroker.test"
    assert line["msg"] == "placed wl_1 on aws"
    assert line["workload_id"] == "wl_1" and line["price"] == "2.50"
    assert line["at"] == "2026-01-02 00:00:00+00:00"
    assert "request_id" not in line  # none set outside a request


@pytest.mark.usefixtures("restore_logging")
def test_uvicorns_colour_copy_of_the_message_is_left_out() -> None:
    buffer = _configured()
    logging.getLogger("uvicorn.error").info(
        "Started %d", 7, extra={"color_message": "Started \x1b[36m%d\x1b[0m"}
    )
    [line] = _lines(buffer)
    assert line == {"ts": line["ts"], "level": "INFO", "logger": "uvicorn.error", "msg": "Started 7"}


@pytest.mark.usefixtures("restore_logging")
def test_the_request_id_is_on_every_line_while_it_is_set() -> None:
    buffer = _configured()
    log = logging.getLogger("gpubroker.test")
    token = request_id.set("req-7")
    try:
        log.info("one")
        log.warning("two")
    finally:
        request_id.reset(token)
    log.info("three")
    assert [(line["msg"], line.get("request_id")) for line in _lines(buffer)] == [
        ("one", "req-7"),
        ("two", "req-7"),
        ("three", None),
    ]


@pytest.mark.usefixtures("restore_logging")
def test_exceptions_are_formatted_and_redacted() -> None:
    buffer = _configured()
    try:
        raise ValueError(f"refused key {KEY}")
    except ValueError:
        logging.getLogger("gpubroker.test").exception("launch failed")
    [line] = _lines(buffer)
    assert line["level"] == "ERROR" and line["msg"] == "launch failed"
    assert "Traceback (most recent call last)" in line["exc_info"]
    assert "ValueError: refused key gpb_0123456789abcdef_" + MASK in line["exc_info"]
    assert SECRET not in buffer.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_secrets_in_arguments_and_extras_are_masked() -> None:
    buffer = _configured()
    log = logging.getLogger("gpubroker.test")
    log.info("headers %s", {"Authorization": f"Bearer {KEY}"})
    log.info(
        "config", extra={"settings": {"aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}}
    )
    text = buffer.getvalue()
    assert SECRET not in text and "wJalrXUtnFEMI" not in text
    first, second = _lines(buffer)
    assert first["msg"] == "headers {'Authorization': 'Bearer " + MASK + "'}"
    assert second["settings"] == {"aws_secret_access_key": MASK}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"key={KEY}", f"key=gpb_0123456789abcdef_{MASK}"),
        (f"x_{KEY} and {KEY}.", f"x_gpb_0123456789abcdef_{MASK} and gpb_0123456789abcdef_{MASK}."),
        ("Authorization: Bearer abc.DEF-123/+=", f"Authorization: Bearer {MASK}"),
        ("authorization: bearer eyJhbGciOi.eyJzdWIi.c2ln==", f"authorization: bearer {MASK}"),
        ("AWS_SECRET_ACCESS_KEY=abc/DEF+123 region=us", f"AWS_SECRET_ACCESS_KEY={MASK} region=us"),
        ("aws_session_token: 'IQoJb3JpZ2lu'", f"aws_session_token: '{MASK}'"),
        ("postgresql://broker:s3cr%40t@db:5432/gpubroker", f"postgresql://broker:{MASK}@db:5432/gpubroker"),
        ("postgresql+psycopg://u:p@h/db", f"postgresql+psycopg://u:{MASK}@h/db"),
        ("dsn host=db user=u password=hunter2 dbname=x", f"dsn host=db user=u password={MASK} dbname=x"),
        ("https://h/cb?user=u&password=hunter2&x=1", f"https://h/cb?user=u&password={MASK}&x=1"),
        # Not secrets: left alone.
        ("http://localhost:8000/v1/offers", "http://localhost:8000/v1/offers"),
        ("workload wl_0123456789abcdef placed", "workload wl_0123456789abcdef placed"),
        ("key id gpb_0123456789abcdef", "key id gpb_0123456789abcdef"),
        ("WWW-Authenticate: Bearer", "WWW-Authenticate: Bearer"),
        # Rules meet: a key as a bearer token, a bearer token whose key part was masked already.
        (f"Authorization: Bearer {KEY}", f"Authorization: Bearer {MASK}"),
        (f"Bearer gpb_0123456789abcdef_{MASK}", f"Bearer gpb_0123456789abcdef_{MASK}"),
    ],
)
def test_redact(raw: str, expected: str) -> None:
    assert redact(raw) == expected
    assert redact(expected) == expected  # masking twice changes nothing


@pytest.mark.usefixtures("restore_logging")
def test_text_format_is_the_human_one_and_redacted_too() -> None:
    buffer = _configured("text")
    logging.getLogger("gpubroker.test").warning("retrying with %s", KEY)
    line = buffer.getvalue().rstrip("\n")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING gpubroker\.test: retrying with "
        r"gpb_0123456789abcdef_\[REDACTED\]",
        line,
    )


@pytest.mark.usefixtures("restore_logging")
def test_sdk_loggers_stay_at_warning_even_at_debug() -> None:
    buffer = _configured(level="debug")
    for name in SECRET_BEARING_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
    assert logging.getLogger("alembic.runtime.migration").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("broker").getEffectiveLevel() == logging.DEBUG
    logging.getLogger("botocore.endpoint").debug("Sending http request: headers={'X-Amz-Security-Token'}")
    logging.getLogger("broker.test").debug("ours")
    assert [line["logger"] for line in _lines(buffer)] == ["broker.test"]


@pytest.mark.usefixtures("restore_logging")
def test_configuring_again_replaces_the_handler_instead_of_adding_one() -> None:
    first = _configured()
    second = _configured(level="warning")
    logging.getLogger("gpubroker.test").warning("once")
    logging.getLogger("gpubroker.test").info("below the level")
    assert first.getvalue() == ""
    assert [line["msg"] for line in _lines(second)] == ["once"]
    with pytest.raises(ValueError, match="json"):
        configure_logging("info", "yaml")
