"""Send a stored cost report by e-mail (SMTP) and to a Slack-compatible webhook (does I/O).

Both channels are off unless configured. Each send is retried with exponential backoff; a
channel that still fails is logged and recorded in the report's ``delivery`` column, and
:func:`deliver` returns normally: a mail server that is down must never stop the scheduler. The
webhook URL is a secret (whoever has it can post to the channel), so it is never logged or
recorded; errors mentioning it are masked.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from broker.reports.build import StoredReport
from broker.reports.render import money, pct
from broker.settings import Settings
from providers.http import make_client

_log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF_FIRST_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 60.0
TIMEOUT_SECONDS = 30.0
_MAX_ERROR = 300  # characters of an error kept in the delivery record


class PermanentFailure(Exception):
    """A failure retrying cannot fix (bad credentials, a refused address, a 4xx from the webhook)."""


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Where reports go. Empty (the default): nowhere."""

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True
    smtp_from: str = "gpubroker@localhost"
    smtp_to: tuple[str, ...] = ()
    webhook_url: str | None = field(default=None, repr=False)
    attempts: int = ATTEMPTS
    backoff_first_seconds: float = BACKOFF_FIRST_SECONDS
    backoff_max_seconds: float = BACKOFF_MAX_SECONDS
    timeout_seconds: float = TIMEOUT_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        to = tuple(a.strip() for a in (settings.smtp_to or "").split(",") if a.strip())
        return cls(
            smtp_host=settings.smtp_host or None,
            smtp_port=settings.smtp_port,
            smtp_user=settings.smtp_user or None,
            smtp_password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            smtp_starttls=settings.smtp_starttls,
            smtp_from=settings.smtp_from,
            smtp_to=to,
            webhook_url=(settings.report_webhook_url.get_secret_value() or None)
            if settings.report_webhook_url
            else None,
        )

    @property
    def email_on(self) -> bool:
        return bool(self.smtp_host and self.smtp_to)

    @property
    def webhook_on(self) -> bool:
        return bool(self.webhook_url)

    @property
    def any_on(self) -> bool:
        return self.email_on or self.webhook_on

    def channels(self) -> tuple[str, ...]:
        """The channels that are on, in the order they are sent."""
        return tuple(c for c, on in (("email", self.email_on), ("webhook", self.webhook_on)) if on)

    def only(self, channel: str) -> DeliveryConfig:
        """This configuration with every channel but ``channel`` turned off."""
        if channel not in CHANNELS:
            raise ValueError(f"no delivery channel {channel!r}")
        if channel == "email":
            return replace(self, webhook_url=None)
        return replace(self, smtp_host=None, smtp_to=())

    def longest_round(self) -> timedelta:
        """How long one :func:`deliver` round can take with every try running into its timeout:
        each channel's tries plus the backoff between them. The claim lease (``resume.py``) must
        be longer, or a slow but living sender's channel could be claimed and sent twice."""
        tries = self.attempts * self.timeout_seconds
        waits = sum(
            min(self.backoff_first_seconds * 2**n, self.backoff_max_seconds) for n in range(self.attempts - 1)
        )
        return timedelta(seconds=len(self.channels()) * (tries + waits))


CHANNELS = ("email", "webhook")


def pending(config: DeliveryConfig, claimed_at: datetime, round_: int = 1) -> dict[str, Any]:
    """The delivery record stored with a report before it is sent (``{}`` when nothing is on):
    each channel that is on, ``pending`` and claimed at ``claimed_at`` by the sender of delivery
    round ``round_`` (the builder's is round 1; see ``resume.py``)."""
    return {channel: claim(claimed_at, round_) for channel in config.channels()}


def claim(claimed_at: datetime, round_: int) -> dict[str, Any]:
    """One channel's record while a sender has it: who else sees it leaves it alone until the lease
    runs out."""
    return {"status": "pending", "claimed_at": claimed_at.isoformat(), "round": round_}


def deliver(
    stored: StoredReport,
    config: DeliveryConfig,
    now: datetime,
    *,
    sleep: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Send ``stored`` on every configured channel; the outcome per channel, never an exception.

    ``sleep`` replaces the wait between attempts (tests record the backoff instead of waiting)."""
    record: dict[str, Any] = {}
    if config.email_on:
        record["email"] = _with_retries("email", lambda: send_email(stored, config), config, now, sleep)
    if config.webhook_on:
        record["webhook"] = _with_retries("webhook", lambda: send_webhook(stored, config), config, now, sleep)
    return record


def _with_retries(
    channel: str,
    send: Callable[[], None],
    config: DeliveryConfig,
    now: datetime,
    sleep: Callable[[float], None] | None,
) -> dict[str, Any]:
    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        _log.warning(
            "cost report %s delivery attempt %d failed (%s); retrying",
            channel,
            state.attempt_number,
            _mask(str(error), config),
        )

    retrying = Retrying(
        stop=stop_after_attempt(config.attempts),
        wait=wait_exponential(
            multiplier=config.backoff_first_seconds,
            min=config.backoff_first_seconds,
            max=config.backoff_max_seconds,
        ),
        retry=retry_if_not_exception_type(PermanentFailure),
        before_sleep=log_retry,
        reraise=True,
        **({"sleep": sleep} if sleep is not None else {}),
    )
    attempts = 0
    try:
        for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                send()
    except Exception as exc:  # any failure is recorded, never raised: the scheduler must go on
        error = _mask(f"{type(exc).__name__}: {exc}", config)[:_MAX_ERROR]
        _log.error("cost report %s delivery failed after %d attempt(s): %s", channel, attempts, error)
        return {"status": "failed", "attempts": attempts, "error": error, "at": now.isoformat()}
    _log.info("cost report %s delivered after %d attempt(s)", channel, attempts)
    return {"status": "sent", "attempts": attempts, "at": now.isoformat()}


def _mask(message: str, config: DeliveryConfig) -> str:
    if config.webhook_url:
        message = message.replace(config.webhook_url, "<webhook URL>")
    if config.smtp_password:
        message = message.replace(config.smtp_password, "[REDACTED]")
    return message


# --- the channels -------------------------------------------------------------------------------


def subject(stored: StoredReport) -> str:
    r = stored.report
    change = pct(r.comparison.change_vs_previous_day_pct, signed=True)
    spend = money(r.totals.spend_usd)
    return f"GPU cost report, {r.org_name}, {r.day.isoformat()}: {spend} ({change} on the day before)"


def summary_text(stored: StoredReport) -> str:
    """The report in a few plain lines (the webhook message and the e-mail's text part)."""
    r = stored.report
    t, c = r.totals, r.comparison
    lines = [
        f"GPU cost report for {r.org_name} on {r.day.isoformat()} ({r.timezone})",
        f"Spend: {money(t.spend_usd)} ({pct(c.change_vs_previous_day_pct, signed=True)} on the day before, "
        f"{pct(c.change_vs_seven_day_avg_pct, signed=True)} on the 7-day average "
        f"of {money(c.seven_day_avg_usd)})",
        f"GPU-hours: {t.gpu_hours:,.1f}; average GPU utilization: "
        + (pct(r.utilization.avg_gpu_util_pct) if r.utilization else "no data"),
        f"Savings against on-demand: {money(t.savings_usd)}",
        f"Commitments: {pct(t.commitment_utilization_pct)} used, idle waste {money(t.commitment_waste_usd)}",
    ]
    if r.anomalies:
        lines.append(f"Anomalies ({len(r.anomalies)}):")
        lines.extend(f"- {a.message}" for a in r.anomalies[:10])
    else:
        lines.append("No anomalies.")
    return "\n".join(lines) + "\n"


def send_email(stored: StoredReport, config: DeliveryConfig) -> None:
    """One message: the summary as text, the full report as HTML, the CSV attached."""
    r = stored.report
    message = EmailMessage()
    message["Subject"] = subject(stored)
    message["From"] = config.smtp_from
    message["To"] = ", ".join(config.smtp_to)
    message.set_content(summary_text(stored))
    message.add_alternative(stored.html, subtype="html")
    message.add_attachment(
        stored.csv.encode(), maintype="text", subtype="csv", filename=f"report-{r.org_name}-{r.day}.csv"
    )
    assert config.smtp_host is not None
    try:
        with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout_seconds) as smtp:
            smtp.ehlo()
            if config.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if config.smtp_user:
                smtp.login(config.smtp_user, config.smtp_password or "")
            smtp.send_message(message)
    except (
        smtplib.SMTPAuthenticationError,
        smtplib.SMTPNotSupportedError,
        smtplib.SMTPRecipientsRefused,
        smtplib.SMTPSenderRefused,
    ) as exc:
        raise PermanentFailure(f"{type(exc).__name__}: {exc}") from exc


def send_webhook(stored: StoredReport, config: DeliveryConfig) -> None:
    """POST ``{"text": ...}``, the payload Slack, Mattermost, Rocket.Chat and others accept."""
    assert config.webhook_url is not None
    with make_client("", timeout=config.timeout_seconds) as client:
        response = client.post(config.webhook_url, json={"text": summary_text(stored)})
    status = response.status_code
    if status < 300:
        return
    if 400 <= status < 500 and status not in (408, 429):
        raise PermanentFailure(f"the webhook answered HTTP {status}")
    raise httpx.HTTPError(f"the webhook answered HTTP {status}")


__all__ = [
    "CHANNELS",
    "DeliveryConfig",
    "PermanentFailure",
    "claim",
    "deliver",
    "pending",
    "send_email",
    "send_webhook",
    "subject",
    "summary_text",
]
