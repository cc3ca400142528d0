"""Report delivery against a real local SMTP server and a local webhook: retries, failures, secrets."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from broker.reports.build import StoredReport
from broker.reports.delivery import DeliveryConfig, deliver
from broker.reports.export import to_json
from broker.reports.model import build_report
from broker.reports.render import render_csv, render_html
from broker.settings import Settings
from tests.reports.conftest import Inbox, Webhook
from tests.reports.test_model import DAY, inputs, line

NOW = datetime(2026, 11, 24, 1, tzinfo=UTC)


def stored_report() -> StoredReport:
    history = {DAY - timedelta(days=1): [line("100")]}
    report = build_report(inputs([line("150.5", ondemand="200")], history))
    return StoredReport(report, to_json(report), render_html(report, NOW), render_csv(report), NOW)


class Sleeps(list[float]):
    """Records the backoff instead of waiting it out."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_nothing_is_sent_when_nothing_is_configured() -> None:
    config = DeliveryConfig.from_settings(Settings(smtp_host=None, report_webhook_url=None))
    assert not config.any_on
    assert deliver(stored_report(), config, NOW) == {}
    # A host without recipients is off too.
    assert not DeliveryConfig.from_settings(Settings(smtp_host="mail.example", smtp_to=" , ")).email_on


def test_email_carries_the_summary_the_html_report_and_the_csv(smtp_server: tuple[int, Inbox]) -> None:
    port, inbox = smtp_server
    config = DeliveryConfig.from_settings(
        Settings(
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_starttls=False,
            smtp_from="broker@acme.test",
            smtp_to="finance@acme.test, cto@acme.test",
        )
    )
    record = deliver(stored_report(), config, NOW)
    assert record == {"email": {"status": "sent", "attempts": 1, "at": NOW.isoformat()}}
    [message] = inbox.messages
    assert inbox.recipients == [["finance@acme.test", "cto@acme.test"]]
    assert message["Subject"] == "GPU cost report, Acme, 2026-11-23: $150.50 (+50.5% on the day before)"
    parts = {part.get_content_type(): part for part in message.walk()}
    assert "Spend: $150.50" in parts["text/plain"].get_payload(decode=True).decode()
    assert "GPU cost report: Acme" in parts["text/html"].get_payload(decode=True).decode()
    attachment = parts["text/csv"]
    assert attachment.get_filename() == "report-Acme-2026-11-23.csv"
    assert attachment.get_payload(decode=True).decode().startswith("Report date,Time zone,")


def test_a_refused_message_is_retried_with_backoff(smtp_server: tuple[int, Inbox]) -> None:
    port, inbox = smtp_server
    inbox.refuse = 2
    config = DeliveryConfig(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False, smtp_to=("a@b.test",))
    sleeps = Sleeps()
    record = deliver(stored_report(), config, NOW, sleep=sleeps)
    assert record["email"]["status"] == "sent" and record["email"]["attempts"] == 3
    assert sleeps == [2.0, 4.0]  # exponential from 2 s
    assert len(inbox.messages) == 1 and inbox.tries == 3


def test_starttls_is_required_unless_turned_off(smtp_server: tuple[int, Inbox]) -> None:
    port, inbox = smtp_server  # the local server offers no STARTTLS: a permanent failure, no retry
    config = DeliveryConfig(smtp_host="127.0.0.1", smtp_port=port, smtp_to=("a@b.test",))
    record = deliver(stored_report(), config, NOW, sleep=Sleeps())
    assert record["email"]["status"] == "failed" and record["email"]["attempts"] == 1
    assert "STARTTLS" in record["email"]["error"]
    assert inbox.messages == []


def test_an_unreachable_mail_server_is_recorded_not_raised() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = DeliveryConfig(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False, smtp_to=("a@b.test",))
    sleeps = Sleeps()
    record = deliver(stored_report(), config, NOW, sleep=sleeps)
    assert record["email"]["status"] == "failed" and record["email"]["attempts"] == 4
    assert sleeps == [2.0, 4.0, 8.0]


def test_webhook_500_then_200_is_retried_and_sent(webhook: tuple[str, Webhook]) -> None:
    url, hook = webhook
    hook.script = [500, 200]
    sleeps = Sleeps()
    record = deliver(stored_report(), DeliveryConfig(webhook_url=url), NOW, sleep=sleeps)
    assert record == {"webhook": {"status": "sent", "attempts": 2, "at": NOW.isoformat()}}
    assert len(hook.bodies) == 2 and sleeps == [2.0]
    text = hook.bodies[-1]["text"]
    assert text.startswith("GPU cost report for Acme on 2026-11-23 (UTC)") and "Anomalies (" in text


def test_webhook_always_500_fails_after_every_attempt_without_leaking_the_url(
    webhook: tuple[str, Webhook], caplog: pytest.LogCaptureFixture
) -> None:
    url, hook = webhook
    hook.script = [500]
    with caplog.at_level(logging.INFO, logger="broker.reports.delivery"):
        record = deliver(stored_report(), DeliveryConfig(webhook_url=url), NOW, sleep=Sleeps())
    assert record["webhook"]["status"] == "failed" and record["webhook"]["attempts"] == 4
    assert record["webhook"]["error"] == "HTTPError: the webhook answered HTTP 500"
    assert len(hook.bodies) == 4
    assert "delivery failed after 4 attempt(s)" in caplog.text
    assert "secret-token" not in caplog.text and "secret-token" not in str(record)
    assert "secret-token" not in repr(DeliveryConfig(webhook_url=url))


def test_webhook_client_error_is_not_retried(webhook: tuple[str, Webhook]) -> None:
    url, hook = webhook
    hook.script = [404]
    record = deliver(stored_report(), DeliveryConfig(webhook_url=url), NOW, sleep=Sleeps())
    assert record["webhook"]["attempts"] == 1 and record["webhook"]["status"] == "failed"
    assert len(hook.bodies) == 1


def test_both_channels_are_independent(smtp_server: tuple[int, Inbox], webhook: tuple[str, Webhook]) -> None:
    port, inbox = smtp_server
    url, hook = webhook
    hook.script = [500]
    config = DeliveryConfig(
        smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False, smtp_to=("a@b.test",), webhook_url=url
    )
    record = deliver(stored_report(), config, NOW, sleep=Sleeps())
    assert (record["email"]["status"], record["webhook"]["status"]) == ("sent", "failed")
    assert len(inbox.messages) == 1
    assert Decimal(stored_report().data["totals"]["spend_usd"]) == Decimal("150.50")
