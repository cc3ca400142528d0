"""The agent's preemption-notice watcher against local fake metadata services (AWS IMDSv2, GCE,
Azure Scheduled Events) on real sockets, relaying to the real API: the documented shapes, 404s,
401s, timeouts, retries, and the notice reaching the migrate job."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from broker.agent import register
from broker.agent_notices import (
    GCP_NOTICE,
    AwsSpotNotice,
    AzureScheduledEvents,
    GcpPreempted,
    MetadataUnavailable,
    NoticeWatcher,
    metadata_source,
)
from broker.db.engine import Database
from broker.db.fleet import InstanceRow
from tests.agent.fake_metadata import FakeMetadata, azure_preempt
from tests.agent.fake_nvml import FakeGpu, FakeNvml
from tests.agent.sleep_clock import FakeClock
from tests.jobs.harness import Broker

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
runner = CliRunner()


class NoticeApi:
    """A scripted stand-in for the API's notice endpoint: answers ``script`` in turn, then 202."""

    def __init__(self, script: list[httpx.Response] | None = None) -> None:
        self.script = list(script or [])
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        self.paths.append(request.url.path)
        if self.script:
            return self.script.pop(0)
        return httpx.Response(202, json={"recorded": True, "detail": "recorded"})

    def client(self) -> httpx.Client:
        return httpx.Client(base_url="http://broker.test", transport=httpx.MockTransport(self.handle))


def problem(code: int, **headers: str) -> httpx.Response:
    return httpx.Response(code, headers=headers, json={"title": "x", "detail": f"status {code}"})


@pytest.fixture
def metadata() -> Iterator[Callable[[str], FakeMetadata]]:
    servers: list[FakeMetadata] = []

    def make(cloud: str) -> FakeMetadata:
        servers.append(FakeMetadata(cloud))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def broker(database: Database) -> Iterator[Broker]:
    b = Broker(database)
    yield b
    b.close()


def client_for(server: FakeMetadata, timeout: float = 2.0) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=timeout, trust_env=False)


def running_spot(broker: Broker) -> tuple[str, str]:
    workload_id = broker.submit(capacity="spot")["id"]
    broker.settle()
    items = broker.client.get(
        "/v1/instances", params={"workload_id": workload_id}, headers=broker.tenant.viewer
    ).json()["items"]
    assert broker.workload(workload_id)["state"] == "RUNNING" and len(items) == 1
    return workload_id, items[0]["id"]


# --- AWS -------------------------------------------------------------------------------------------


def test_aws_reads_instance_action_through_an_imdsv2_token(metadata: Callable[[str], FakeMetadata]) -> None:
    server = metadata("aws")
    source = AwsSpotNotice(client_for(server))
    assert source.check(T0) is None  # 404: nothing scheduled
    assert source.check(T0 + timedelta(seconds=5)) is None
    server.action = {"action": "terminate", "time": "2026-11-24T12:02:00Z"}
    notice = source.check(T0 + timedelta(seconds=10))
    assert notice is not None
    assert notice.source == "aws" and notice.at == T0 + timedelta(seconds=10)
    assert notice.reclaim_at == datetime(2026, 11, 24, 12, 2, tzinfo=UTC)
    assert "terminate" in notice.detail
    puts = [r for r in server.requests if r.method == "PUT"]
    assert len(puts) == 1  # one token for every poll
    assert puts[0].headers["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    gets = [r for r in server.requests if r.method == "GET"]
    assert {r.headers["x-aws-ec2-metadata-token"] for r in gets} == {server.token}


def test_aws_gets_a_new_token_when_the_old_one_is_refused(metadata: Callable[[str], FakeMetadata]) -> None:
    server = metadata("aws")
    source = AwsSpotNotice(client_for(server))
    assert source.check(T0) is None
    server.token = "AQAEArotated=="  # the old token now answers 401
    server.action = {"action": "stop", "time": "2026-11-24T12:02:00Z"}
    notice = source.check(T0 + timedelta(seconds=5))
    assert notice is not None and "stop" in notice.detail
    assert [r.method for r in server.requests] == ["PUT", "GET", "GET", "PUT", "GET"]


@pytest.mark.parametrize(
    "body",
    ["not json", json.dumps({"action": "terminate"}), json.dumps([1]), '{"action":"stop","time":"soon"}'],
)
def test_aws_an_unreadable_instance_action_or_an_error_is_unavailable_not_a_notice(
    metadata: Callable[[str], FakeMetadata], body: str
) -> None:
    server = metadata("aws")
    source = AwsSpotNotice(client_for(server))
    server.raw_action = body
    with pytest.raises(MetadataUnavailable, match="unreadable"):
        source.check(T0)
    server.raw_action, server.status = None, 500
    with pytest.raises(MetadataUnavailable, match="HTTP 500"):
        source.check(T0)


# --- GCP -------------------------------------------------------------------------------------------


def test_gcp_reads_the_preempted_flag(metadata: Callable[[str], FakeMetadata]) -> None:
    server = metadata("gcp")
    source = GcpPreempted(client_for(server))
    assert source.check(T0) is None  # FALSE
    server.preempted = True
    notice = source.check(T0 + timedelta(seconds=5))
    assert notice is not None and notice.source == "gcp"
    assert notice.reclaim_at == T0 + timedelta(seconds=5) + GCP_NOTICE
    assert all(r.headers["metadata-flavor"] == "Google" for r in server.requests)
    assert {r.path for r in server.requests} == {"/computeMetadata/v1/instance/preempted"}


# --- Azure -----------------------------------------------------------------------------------------


def test_azure_reads_a_preempt_scheduled_event_for_this_vm(metadata: Callable[[str], FakeMetadata]) -> None:
    server = metadata("azure")
    source = AzureScheduledEvents(client_for(server))
    assert source.check(T0) is None  # no events
    reboot = {**azure_preempt([server.vm_name]), "EventType": "Reboot"}
    server.events = [reboot, azure_preempt(["gpu-node-8"])]  # a reboot; a neighbour's preemption
    assert source.check(T0) is None
    server.events.append(azure_preempt([server.vm_name], "Tue, 24 Nov 2026 12:00:30 GMT"))
    notice = source.check(T0 + timedelta(seconds=1))
    assert notice is not None and notice.source == "azure"
    assert notice.reclaim_at == datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC)
    assert "Preempt" in notice.detail
    assert all(r.headers["metadata"] == "true" for r in server.requests)
    events = [r for r in server.requests if r.path == "/metadata/scheduledevents"]
    assert {r.query["api-version"][0] for r in events} == {"2020-07-01"}


def test_azure_a_started_preemption_without_not_before_is_still_a_notice(
    metadata: Callable[[str], FakeMetadata],
) -> None:
    server = metadata("azure")
    server.events = [{**azure_preempt([server.vm_name], ""), "EventStatus": "Started"}]
    notice = AzureScheduledEvents(client_for(server)).check(T0)
    assert notice is not None and notice.reclaim_at is None


# --- failures of the metadata service --------------------------------------------------------------


def test_a_metadata_timeout_reads_as_no_notice_and_is_logged_once(
    metadata: Callable[[str], FakeMetadata], caplog: pytest.LogCaptureFixture
) -> None:
    server = metadata("gcp")
    server.preempted = True
    server.delay = 0.5
    clock = FakeClock(T0)
    api = NoticeApi()
    watcher = NoticeWatcher(
        GcpPreempted(client_for(server, timeout=0.05)), api.client(), "in_1", clock=clock, sleep=clock.sleep
    )
    caplog.set_level(logging.DEBUG, logger="broker.agent_notices")
    assert watcher.run(rounds=3) is None
    assert watcher.polls == 3 and api.bodies == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ReadTimeout" in warnings[0].getMessage()
    assert clock.sleeps == [5.0, 5.0]  # the interval between polls


def test_an_unreachable_metadata_service_raises_metadata_unavailable() -> None:
    source = metadata_source("aws", "http://127.0.0.1:9")  # the discard port: refused
    assert source is not None
    with pytest.raises(MetadataUnavailable, match="ConnectError"):
        source.check(T0)
    source.client.close()


def test_metadata_source_knows_the_clouds_and_none() -> None:
    assert metadata_source("none") is None
    with pytest.raises(ValueError, match="unknown cloud"):
        metadata_source("oracle")
    source = metadata_source("gcp")
    assert source is not None and str(source.client.base_url) == "http://metadata.google.internal"
    source.client.close()


# --- relaying to the API ---------------------------------------------------------------------------


def test_the_watcher_relays_a_notice_once_and_the_migrate_job_moves_the_workload(
    metadata: Callable[[str], FakeMetadata], broker: Broker
) -> None:
    workload_id, instance_id = running_spot(broker)
    server = metadata("aws")
    reclaim = broker.clock() + timedelta(minutes=2)

    def sleep(seconds: float) -> None:
        broker.clock.advance(seconds=seconds)
        if len(server.notice_requests()) >= 2:  # the cloud schedules the reclaim after two polls
            server.action = {"action": "terminate", "time": reclaim.isoformat().replace("+00:00", "Z")}

    api = TestClient(broker.app, headers=broker.tenant.operator)
    watcher = NoticeWatcher(
        AwsSpotNotice(client_for(server)), api, instance_id, clock=broker.clock, sleep=sleep
    )
    notice = watcher.run()
    assert notice is not None and watcher.relayed and watcher.polls == 3
    assert notice.reclaim_at == reclaim
    with broker.database.sessions() as session:
        row = session.get(InstanceRow, instance_id)
        assert row is not None and row.notice_at == notice.at
    assert watcher.run() is notice  # relayed: nothing more to do, nothing posted again
    assert broker.scheduler.run_losses() == 1
    assert broker.workload(workload_id)["state"] == "MIGRATING"
    planned = [e for e in broker.events(workload_id) if e["kind"] == "migration-planned"]
    assert planned[0]["data"]["trigger"] == "preemption-notice"


def test_a_failed_post_backs_off_and_a_429_waits_as_told(metadata: Callable[[str], FakeMetadata]) -> None:
    server = metadata("gcp")
    server.preempted = True
    clock = FakeClock(T0)
    api = NoticeApi([problem(503), problem(429, **{"Retry-After": "7"})])
    watcher = NoticeWatcher(
        GcpPreempted(client_for(server)), api.client(), "in_1", clock=clock, sleep=clock.sleep, jitter=0.0
    )
    notice = watcher.run()
    assert notice is not None and watcher.relayed
    assert clock.sleeps == [1.0, 7.0]
    assert len(api.bodies) == 3 and api.bodies[0] == api.bodies[2]  # the same notice each time
    assert api.bodies[0]["source"] == "gcp" and api.bodies[0]["at"] == T0.isoformat()
    assert api.paths == ["/v1/instances/in_1/preemption-notice"] * 3
    assert len(server.notice_requests()) == 1  # polled once; the retries only post


def test_a_refusal_is_not_retried(
    metadata: Callable[[str], FakeMetadata], caplog: pytest.LogCaptureFixture
) -> None:
    server = metadata("gcp")
    server.preempted = True
    clock = FakeClock(T0)
    api = NoticeApi([problem(404)])
    watcher = NoticeWatcher(
        GcpPreempted(client_for(server)), api.client(), "in_1", clock=clock, sleep=clock.sleep
    )
    assert watcher.run() is not None
    assert len(api.bodies) == 1 and clock.sleeps == []
    assert any("refused the preemption notice (404" in r.getMessage() for r in caplog.records)


def test_stopped_before_the_next_poll_it_looks_and_posts_once_more(
    metadata: Callable[[str], FakeMetadata],
) -> None:
    """The shutdown the reclaim starts stops the agent: the watcher's last look still relays."""
    server = metadata("gcp")
    clock = FakeClock(T0)
    api = NoticeApi()
    stop = threading.Event()

    def sleep(seconds: float) -> None:
        server.preempted = True  # flips while the agent waits; SIGTERM follows
        stop.set()

    watcher = NoticeWatcher(
        GcpPreempted(client_for(server)), api.client(), "in_1", clock=clock, sleep=sleep, stop=stop
    )
    assert watcher.run() is not None and watcher.relayed
    assert len(api.bodies) == 1 and watcher.polls == 2


# --- the command -----------------------------------------------------------------------------------


def test_the_agent_command_with_cloud_relays_the_notice_and_never_logs_the_key(
    metadata: Callable[[str], FakeMetadata], broker: Broker
) -> None:
    _, instance_id = running_spot(broker)
    server = metadata("azure")
    not_before = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    server.events = [azure_preempt([server.vm_name], not_before)]
    key = broker.tenant.operator["Authorization"].split()[1]

    def client_factory(base_url: str, headers: dict[str, str]) -> httpx.Client:
        # The system clock: the watcher stamps the notice with it, and the API checks it against its own.
        return TestClient(create_app(broker.database), base_url=base_url, headers=headers)

    nvml = FakeNvml(gpus=[FakeGpu(util=50)])
    env = {"GPUBROKER_AGENT_CLOUD": "azure", "GPUBROKER_METADATA_URL": server.url, "GPUBROKER_API_KEY": key}
    args = ["agent", "--api", "http://testserver", "--instance-id", instance_id, "--rounds", "1"]
    result = runner.invoke(cli(nvml, client_factory), [*args, "--log-level", "debug"], env=env)
    assert result.exit_code == 0, result.output
    with broker.database.sessions() as session:
        row = session.get(InstanceRow, instance_id)
        assert row is not None and row.notice_at is not None
        assert row.state_reason == "preemption notice (azure)"
    assert key not in result.output
    assert server.notice_requests()


def test_the_agent_command_refuses_an_unknown_cloud() -> None:
    nvml = FakeNvml(gpus=[FakeGpu(util=50)])
    args = ["agent", "--api", "http://x", "--key", "k", "--instance-id", "in_1", "--cloud", "oracle"]
    result = runner.invoke(cli(nvml), args)
    assert result.exit_code == 2 and "--cloud must be one of none, aws, gcp, azure" in result.stderr


def cli(
    nvml: FakeNvml, client_factory: Callable[[str, dict[str, str]], httpx.Client] | None = None
) -> typer.Typer:
    app = typer.Typer()
    app.command("version")(lambda: None)  # a second command, so `agent` stays a named subcommand
    if client_factory is None:
        register(app, load_nvml=lambda: nvml)
    else:
        register(app, load_nvml=lambda: nvml, client_factory=client_factory)
    return app
