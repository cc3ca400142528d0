"""Crash-safe report delivery against the real database, a local SMTP server and a local webhook: a
delivery a dead replica left pending is sent once, by one resumer, after its claim's lease; a live
sender keeps its claim; sent channels stay sent; rounds are bounded. Time is an injected clock."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import sessionmaker

from broker.db.engine import Database
from broker.db.fleet import CostReport
from broker.jobs.scheduler import Scheduler
from broker.reports.build import ReportOptions, build_and_store
from broker.reports.delivery import DeliveryConfig, pending
from broker.reports.job import run_nightly_reports
from broker.reports.resume import (
    LEASE,
    MAX_ROUNDS,
    RESUME_INTERVAL,
    record_outcome,
    resume_deliveries,
)
from broker.settings import Settings, sqlalchemy_url
from tests.reports.conftest import Inbox, Webhook
from tests.reports.fleet import AFTER, D
from tests.reports.test_job import seeded_org

T0 = AFTER  # when the dead replica stored the report and claimed its delivery
STALE = T0 + LEASE + timedelta(minutes=1)  # its claim has run out


def at(moment: datetime) -> Any:
    return lambda: moment


def store_left_pending(database: Database, org: str, day: date, config: DeliveryConfig) -> dict[str, Any]:
    """What a replica that died right after storing the report leaves behind: the report committed
    with its delivery claimed at T0, and nothing sent."""
    claims = pending(config, T0)
    with database.sessions.begin() as session:
        build_and_store(session, org, day, ReportOptions(timezone="UTC"), T0, delivery=claims)
    return claims


def delivery(database: Database, org: str, day: date = D) -> dict[str, Any]:
    with database.sessions.begin() as session:
        return session.scalars(
            select(CostReport.delivery).where(CostReport.org_id == org, CostReport.day == day)
        ).one()


def both(port: int, url: str) -> DeliveryConfig:
    return DeliveryConfig(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_starttls=False,
        smtp_to=("finance@acme.test",),
        webhook_url=url,
    )


def test_the_lease_outlasts_the_longest_delivery_round() -> None:
    longest = DeliveryConfig(
        smtp_host="mail.test", smtp_to=("a@b.test",), webhook_url="http://x"
    ).longest_round()
    assert longest == timedelta(seconds=2 * (4 * 30 + 2 + 4 + 8))
    assert 3 * longest < LEASE


def test_a_delivery_a_dead_replica_left_pending_is_sent_once_as_stored(
    database: Database, smtp_server: tuple[int, Inbox], webhook: tuple[str, Webhook]
) -> None:
    org = seeded_org(database)
    (port, inbox), (url, hook) = smtp_server, webhook
    config = both(port, url)
    store_left_pending(database, org, D, config)

    assert resume_deliveries(database, config, at(T0 + LEASE)).sent == {}  # not older than the lease yet
    assert hook.bodies == [] and inbox.messages == []

    run = resume_deliveries(database, config, at(STALE), sleep=[].append)
    sent = {"status": "sent", "attempts": 1, "at": STALE.isoformat(), "round": 2}
    assert run.sent == {(org, D): {"email": sent, "webhook": sent}} and run.gave_up == []
    assert delivery(database, org) == {"email": sent, "webhook": sent}
    [body] = hook.bodies
    assert body["text"].startswith("GPU cost report for acme-nightly on 2026-11-23 (UTC)")
    assert "Spend: $1,020.00" in body["text"]
    [message] = inbox.messages
    with database.sessions.begin() as session:
        html = session.scalars(select(CostReport.html).where(CostReport.org_id == org)).one()
    parts = {part.get_content_type(): part for part in message.walk()}
    mailed = parts["text/html"].get_payload(decode=True).decode().replace("\r\n", "\n")
    assert mailed == html and T0.isoformat(timespec="seconds") in mailed  # as stored, not rebuilt now

    later = resume_deliveries(database, config, at(STALE + 10 * LEASE))
    assert later.sent == {} and len(hook.bodies) == 1 and len(inbox.messages) == 1


def test_the_builders_own_claim_keeps_a_resumer_off_while_it_sends(
    database: Database, webhook: tuple[str, Webhook]
) -> None:
    org = seeded_org(database)
    url, hook = webhook
    config = DeliveryConfig(webhook_url=url)
    seen: list[tuple[dict[str, Any], dict[Any, Any]]] = []
    answer = hook.next_status

    def while_sending(body: dict[str, Any]) -> int:  # runs while the builder waits for the POST
        if not seen:
            record = delivery(database, org)
            seen.append(
                (record, resume_deliveries(database, config, at(T0 + LEASE - timedelta(seconds=1))).sent)
            )
        return answer(body)

    hook.next_status = while_sending  # type: ignore[method-assign]
    settings = Settings(report_timezone="UTC", report_webhook_url=url)
    run = run_nightly_reports(database, T0 - timedelta(hours=1), settings, day=D, clock=at(T0))
    [(during, stolen)] = seen
    assert during == {"webhook": {"status": "pending", "claimed_at": T0.isoformat(), "round": 1}}
    assert stolen == {}
    assert len(hook.bodies) == 1
    outcome = {"status": "sent", "attempts": 1, "at": T0.isoformat(), "round": 1}
    assert run.delivery[org] == {"webhook": outcome} and delivery(database, org) == {"webhook": outcome}


def test_two_resumers_at_once_send_each_stuck_webhook_once(
    database: Database, webhook: tuple[str, Webhook]
) -> None:
    org = seeded_org(database)
    url, hook = webhook
    config = DeliveryConfig(webhook_url=url)
    days = [D - timedelta(days=n) for n in range(6)]
    for day in days:
        store_left_pending(database, org, day, config)
    start = threading.Barrier(2)
    runs = []

    def resumer() -> None:
        start.wait()
        runs.append(resume_deliveries(database, config, at(STALE)))

    threads = [threading.Thread(target=resumer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    posted = Counter(body["text"].split(" on ", 1)[1][:10] for body in hook.bodies)
    assert posted == Counter({day.isoformat(): 1 for day in days})
    assert sorted(key for r in runs for key in r.sent) == sorted((org, day) for day in days)
    for day in days:
        assert delivery(database, org, day)["webhook"]["status"] == "sent"
        assert delivery(database, org, day)["webhook"]["round"] == 2


def test_a_report_another_replica_is_claiming_is_skipped(
    database: Database, database_url: str, webhook: tuple[str, Webhook]
) -> None:
    org = seeded_org(database)
    url, hook = webhook
    config = DeliveryConfig(webhook_url=url)
    left = store_left_pending(database, org, D, config)
    # A resumer that waited for the lock instead of skipping would wait for this very test: make it
    # fail rather than hang.
    engine = create_engine(sqlalchemy_url(database_url), connect_args={"options": "-c lock_timeout=10s"})
    resumer = Database(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False), embedded=None)
    try:
        with database.sessions.begin() as other:  # another resumer, between its lock and its commit
            other.execute(select(CostReport.day).where(CostReport.org_id == org).with_for_update())
            assert resume_deliveries(resumer, config, at(STALE)).sent == {}
            assert hook.bodies == [] and delivery(database, org) == left
        assert list(resume_deliveries(resumer, config, at(STALE)).sent) == [(org, D)]
        assert len(hook.bodies) == 1
    finally:
        engine.dispose()


def test_a_sender_whose_claim_was_taken_over_does_not_overwrite_the_outcome(
    database: Database, webhook: tuple[str, Webhook]
) -> None:
    org = seeded_org(database)
    url, _hook = webhook
    config = DeliveryConfig(webhook_url=url)
    mine = store_left_pending(database, org, D, config)["webhook"]
    resume_deliveries(database, config, at(STALE))  # the lease ran out: round 2 sent it
    after_resume = delivery(database, org)
    late = {"status": "failed", "attempts": 4, "error": "too slow", "at": STALE.isoformat(), "round": 1}
    assert not record_outcome(database, org, D, "webhook", mine, late)
    assert delivery(database, org) == after_resume and after_resume["webhook"]["status"] == "sent"


def test_a_channel_already_sent_is_not_sent_again_while_the_pending_one_is(
    database: Database, smtp_server: tuple[int, Inbox], webhook: tuple[str, Webhook]
) -> None:
    org = seeded_org(database)
    (port, inbox), (url, hook) = smtp_server, webhook
    config = both(port, url)
    claims = store_left_pending(database, org, D, config)
    # The dead replica posted the webhook and recorded it, then died before the mail went out.
    webhook_sent = {"status": "sent", "attempts": 1, "at": T0.isoformat(), "round": 1}
    assert record_outcome(database, org, D, "webhook", claims["webhook"], webhook_sent)

    run = resume_deliveries(database, config, at(STALE))
    assert hook.bodies == [] and len(inbox.messages) == 1
    assert run.sent == {
        (org, D): {"email": {"status": "sent", "attempts": 1, "at": STALE.isoformat(), "round": 2}}
    }
    assert delivery(database, org)["webhook"] == webhook_sent


class Died(BaseException):
    """The sender's process ends in the middle of a send (what ``kill -9`` does to it)."""


def die(seconds: float) -> None:
    raise Died  # the first backoff wait: after one try went out


def test_rounds_are_bounded_and_the_last_ends_failed(
    database: Database, webhook: tuple[str, Webhook], caplog: pytest.LogCaptureFixture
) -> None:
    org = seeded_org(database)
    url, hook = webhook
    hook.script = [500]
    config = DeliveryConfig(webhook_url=url)
    store_left_pending(database, org, D, config)  # round 1's sender died
    now = T0
    for round_ in range(2, MAX_ROUNDS + 1):  # each resumer claims, posts once, and dies too
        now += LEASE + timedelta(minutes=1)
        with pytest.raises(Died):
            resume_deliveries(database, config, at(now), sleep=die)
        assert delivery(database, org)["webhook"] == {
            "status": "pending",
            "claimed_at": now.isoformat(),
            "round": round_,
        }
    assert len(hook.bodies) == MAX_ROUNDS - 1

    now += LEASE + timedelta(minutes=1)
    with caplog.at_level(logging.ERROR, logger="broker.reports.resume"):
        run = resume_deliveries(database, config, at(now), sleep=die)
    assert run.sent == {} and run.gave_up == [(org, D, "webhook")]
    record = delivery(database, org)["webhook"]
    assert (record["status"], record["round"], record["at"]) == ("failed", MAX_ROUNDS, now.isoformat())
    assert f"no outcome after {MAX_ROUNDS} delivery round(s)" in record["error"]
    assert "webhook delivery for" in caplog.text and "secret-token" not in caplog.text
    assert len(hook.bodies) == MAX_ROUNDS - 1  # nothing posted when giving up
    assert resume_deliveries(database, config, at(now + 10 * LEASE)).gave_up == []


def test_a_resumed_round_that_fails_is_final(database: Database, webhook: tuple[str, Webhook]) -> None:
    org = seeded_org(database)
    url, hook = webhook
    hook.script = [500]
    config = DeliveryConfig(webhook_url=url)
    store_left_pending(database, org, D, config)
    waits: list[float] = []
    run = resume_deliveries(database, config, at(STALE), sleep=waits.append)
    outcome = run.sent[(org, D)]["webhook"]
    assert (outcome["status"], outcome["attempts"], outcome["round"]) == ("failed", 4, 2)
    assert waits == [2.0, 4.0, 8.0] and delivery(database, org)["webhook"] == outcome
    assert resume_deliveries(database, config, at(STALE + 10 * LEASE)).sent == {}
    assert len(hook.bodies) == 4


def test_an_unreadable_report_or_a_channel_turned_off_fails_and_the_rest_go_on(
    database: Database, smtp_server: tuple[int, Inbox], webhook: tuple[str, Webhook]
) -> None:
    org = seeded_org(database)
    (port, inbox), (url, hook) = smtp_server, webhook
    store_left_pending(database, org, D - timedelta(days=2), DeliveryConfig(webhook_url=url))
    store_left_pending(database, org, D - timedelta(days=1), both(port, url))
    store_left_pending(database, org, D, DeliveryConfig(webhook_url=url))
    with database.sessions.begin() as session:  # written by a newer gpubroker, say
        session.execute(
            update(CostReport)
            .where(CostReport.day == D - timedelta(days=2))
            .values(data=CostReport.data.op("||")({"version": 99}))
        )
    webhook_only = DeliveryConfig(webhook_url=url)  # mail was turned off since
    run = resume_deliveries(database, webhook_only, at(STALE))
    assert sorted(run.gave_up) == [
        (org, D - timedelta(days=2), "webhook"),
        (org, D - timedelta(days=1), "email"),
    ]
    assert sorted(run.sent) == [(org, D - timedelta(days=1)), (org, D)]
    unreadable = delivery(database, org, D - timedelta(days=2))["webhook"]
    assert unreadable["status"] == "failed" and "cannot be read" in unreadable["error"]
    turned_off = delivery(database, org, D - timedelta(days=1))
    assert turned_off["email"]["error"] == "email delivery is no longer configured"
    assert turned_off["webhook"]["status"] == "sent"
    assert len(hook.bodies) == 2 and inbox.messages == []


def test_the_scheduler_resumes_deliveries_on_a_timer_with_its_clock(
    database: Database, webhook: tuple[str, Webhook]
) -> None:
    url, hook = webhook
    scheduler = Scheduler(database, [], Settings(report_webhook_url=url), clock=at(STALE))
    scheduler.start()
    try:
        job = scheduler._scheduler.get_job("report-delivery")  # type: ignore[union-attr]
        assert job.trigger.interval == RESUME_INTERVAL
    finally:
        scheduler.stop()
    org = seeded_org(database)
    store_left_pending(database, org, D, DeliveryConfig(webhook_url=url))
    assert list(scheduler.run_report_deliveries().sent) == [(org, D)]
    assert len(hook.bodies) == 1
