"""The node agent: NVML readings (through a fake pynvml) end up in the real API's database and summary;
no-GPU exits, backoff, Retry-After, the bounded buffer, refusals, and the key never logged."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pynvml
import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from api.app import create_app
from broker.agent import (
    EXIT_NO_GPU,
    EXIT_REFUSED,
    AgentStopped,
    GpuReading,
    NoGpu,
    NvmlReader,
    UtilizationAgent,
    register,
)
from broker.db.engine import Database
from broker.db.fleet import UtilizationSample
from tests.agent.fake_nvml import FakeGpu, FakeNvml
from tests.agent.sleep_clock import FakeClock
from tests.api.conftest import NOW, Tenant
from tests.fleet_rows import add_running_instance

runner = CliRunner()


class FakeApi:
    """A scripted stand-in for the API server: answers with ``script`` in turn (then 202s)."""

    def __init__(self, clock: FakeClock, script: list[Callable[[], httpx.Response]] | None = None) -> None:
        self.clock = clock
        self.script = list(script or [])
        self.posts: list[tuple[datetime, list[dict[str, Any]]]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.posts.append((self.clock(), json.loads(request.content)["samples"]))
        if self.script:
            return self.script.pop(0)()
        n = len(self.posts[-1][1])
        return httpx.Response(202, json={"accepted": n, "duplicates": 0})

    def client(self) -> httpx.Client:
        return httpx.Client(base_url="http://broker.test", transport=httpx.MockTransport(self.handle))

    @property
    def times(self) -> list[float]:
        start = self.posts[0][0]
        return [(at - start).total_seconds() for at, _ in self.posts]


def two_gpus() -> FakeNvml:
    return FakeNvml(
        gpus=[
            FakeGpu(util=90, memory_used_mib=40_000, memory_total_mib=80_000, power_mw=700_250),
            FakeGpu(util=2, memory_supported=False, power_mw=None),
        ]
    )


def opened(nvml: FakeNvml) -> NvmlReader:
    reader = NvmlReader(nvml)
    reader.open()
    return reader


def status(code: int, **headers: str) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(code, headers=headers, json={"title": "x", "detail": f"status {code}"})


# --- NvmlReader ------------------------------------------------------------------------------------


def test_reader_converts_nvml_units_and_tolerates_unsupported_counters() -> None:
    nvml = two_gpus()
    reader = NvmlReader(nvml)
    assert reader.open() == ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"]
    assert reader.read() == [
        GpuReading(0, 90, 40_000, 80_000, Decimal("700.25")),  # bytes -> MiB, mW -> W
        GpuReading(1, 2, None, None, None),  # memory and power not supported
    ]
    reader.close()
    assert nvml.calls == ["nvmlInit", "nvmlShutdown"] and not nvml.initialized


def test_reader_leaves_out_a_gpu_it_cannot_read_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    nvml = two_gpus()
    nvml.gpus[0].util_error = pynvml.NVMLError_GpuIsLost
    reader = opened(nvml)
    with caplog.at_level(logging.INFO, logger="broker.agent"):
        assert [r.gpu_index for r in reader.read()] == [1]
        assert [r.gpu_index for r in reader.read()] == [1]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "GPU 0" in warnings[0].getMessage()


def test_memory_used_leaves_out_the_drivers_reserve_as_nvidia_smi_does() -> None:
    # As seen on a real H100 80GB (bench/agent_on_gpu.py): idle, v1 said 480 MiB used, nvidia-smi 0.
    nvml = FakeNvml(gpus=[FakeGpu(memory_used_mib=0, memory_reserved_mib=480)])
    reader = opened(nvml)
    assert reader.read()[0].memory_used_mib == 0
    nvml.gpus[0].memory_used_mib = 11_123  # a program took memory
    assert reader.read()[0].memory_used_mib == 11_123
    assert nvml.memory_calls == ["v2", "v2"]


def test_a_driver_without_v2_memory_info_falls_back_to_v1_once(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml(gpus=[FakeGpu(memory_used_mib=0, memory_reserved_mib=480, memory_v2=False)] * 2)
    reader = opened(nvml)
    with caplog.at_level(logging.INFO, logger="broker.agent"):
        assert [r.memory_used_mib for r in reader.read()] == [480, 480]  # v1 counts the reserve
        assert [r.memory_used_mib for r in reader.read()] == [480, 480]
    assert nvml.memory_calls == ["v2", "v1", "v1", "v1", "v1"]  # v2 is tried once, not per reading
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_memory_unsupported_on_v2_reads_as_none_without_falling_back() -> None:
    nvml = FakeNvml(gpus=[FakeGpu(memory_supported=False)])
    reader = opened(nvml)
    assert reader.read()[0].memory_used_mib is None
    assert reader.read()[0].memory_total_mib is None
    assert nvml.memory_calls == ["v2", "v2"]


@pytest.mark.parametrize(
    ("nvml", "message"),
    [
        (FakeNvml(init_error=pynvml.NVMLError_LibraryNotFound), "library (libnvidia-ml) was not found"),
        (FakeNvml(init_error=pynvml.NVMLError_DriverNotLoaded), "driver is not loaded"),
        (
            FakeNvml(init_error=pynvml.NVMLError_NoPermission),
            "NVML could not start: Insufficient Permissions",
        ),
        (FakeNvml(gpus=[]), "found no GPU"),
    ],
)
def test_reader_reports_no_gpu(nvml: FakeNvml, message: str) -> None:
    with pytest.raises(NoGpu, match=message.replace("(", r"\(").replace(")", r"\)")):
        NvmlReader(nvml).open()
    assert nvml.initialized is False  # a zero-GPU NVML was shut down again


# --- the agent against the real API --------------------------------------------------------------------


def test_samples_from_nvml_reach_the_database_and_the_summary(
    database: Database,
    tenant: Tenant,
    api: Callable[[dict[str, str]], TestClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    inst = add_running_instance(database, tenant.org_id, gpus=2)
    clock = FakeClock(NOW - timedelta(minutes=2))
    agent = UtilizationAgent(
        opened(two_gpus()), api(tenant.operator), inst, interval=10, clock=clock, sleep=clock.sleep
    )
    with caplog.at_level(logging.DEBUG):
        agent.run(rounds=3)
    assert clock.sleeps == [10, 10]
    assert agent.posted == 6 and not agent.buffer
    with database.sessions() as session:
        rows = session.execute(
            select(UtilizationSample.gpu_index, UtilizationSample.at, UtilizationSample.gpu_util_pct)
            .where(UtilizationSample.instance_id == inst)
            .order_by(UtilizationSample.at, UtilizationSample.gpu_index)
        ).all()
    start = NOW - timedelta(minutes=2)
    assert [(g, at - start, u) for g, at, u in rows] == [
        (gpu, timedelta(seconds=s), Decimal(util)) for s in (0, 10, 20) for gpu, util in ((0, 90), (1, 2))
    ]
    [group] = api(tenant.viewer).get("/v1/utilization/summary", params={"group_by": "cloud"}).json()["groups"]
    assert (group["key"], group["instances"], group["gpus"], group["samples"]) == ("aws", 1, 2, 6)
    assert Decimal(group["avg_gpu_util_pct"]) == 46  # (90 + 2) / 2
    assert Decimal(group["avg_memory_used_pct"]) == 50  # GPU 1 reports no memory
    assert Decimal(group["avg_power_watts"]) == Decimal("700.25")  # GPU 1 reports no power
    assert Decimal(group["idle_gpu_fraction"]) == Decimal("0.5")
    assert tenant.operator["Authorization"].split()[1] not in caplog.text


def test_reposting_after_a_lost_response_is_harmless(
    database: Database, tenant: Tenant, api: Callable[[dict[str, str]], TestClient]
) -> None:
    inst = add_running_instance(database, tenant.org_id, gpus=2)
    clock = FakeClock(NOW - timedelta(minutes=1))
    client = api(tenant.operator)
    agent = UtilizationAgent(opened(two_gpus()), client, inst, clock=clock, sleep=clock.sleep)
    agent.collect(clock())
    batch = list(agent.buffer)
    assert agent.flush()  # stored; pretend the agent never saw the answer and sends again
    again = client.post("/v1/utilization", json={"samples": batch})
    assert again.json() == {"accepted": 0, "duplicates": 2}


@pytest.mark.parametrize(
    ("role_or_instance", "expected"), [("viewer", "403"), ("unknown-instance", "404"), ("bad-key", "401")]
)
def test_refusals_stop_the_agent_with_a_clear_message(
    database: Database,
    tenant: Tenant,
    api: Callable[[dict[str, str]], TestClient],
    role_or_instance: str,
    expected: str,
) -> None:
    inst = add_running_instance(database, tenant.org_id)
    headers = {
        "viewer": tenant.viewer,
        "unknown-instance": tenant.operator,
        "bad-key": {"Authorization": "Bearer gpb_0000000000000000_nope"},
    }[role_or_instance]
    instance_id = "in_nope" if role_or_instance == "unknown-instance" else inst
    clock = FakeClock(NOW)
    agent = UtilizationAgent(opened(two_gpus()), api(headers), instance_id, clock=clock, sleep=clock.sleep)
    with pytest.raises(AgentStopped, match=expected) as stopped:
        agent.run()
    assert {"401": "--key", "403": "operator role", "404": "--instance-id"}[expected] in str(stopped.value)
    assert clock.sleeps == []  # no retrying


def test_a_batch_the_api_rejects_for_good_is_dropped_not_retried_forever(
    database: Database,
    tenant: Tenant,
    api: Callable[[dict[str, str]], TestClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    inst = add_running_instance(database, tenant.org_id)
    clock = FakeClock(NOW + timedelta(minutes=10))  # this machine's clock runs ahead of the server's
    agent = UtilizationAgent(opened(two_gpus()), api(tenant.operator), inst, clock=clock, sleep=clock.sleep)
    with caplog.at_level(logging.ERROR, logger="broker.agent"):
        agent.run(rounds=1)
    assert not agent.buffer and agent.posted == 0
    assert "rejected 2 samples (422" in caplog.text and "in the future" in caplog.text


# --- retrying, against a scripted fake server -----------------------------------------------------------


def test_429_retry_after_is_honoured() -> None:
    clock = FakeClock(NOW)
    server = FakeApi(clock, [status(429, **{"Retry-After": "7"})])
    agent = UtilizationAgent(
        opened(two_gpus()), server.client(), "in_1", interval=10, jitter=0, clock=clock, sleep=clock.sleep
    )
    agent.run(rounds=2)
    assert server.times == [0, 7, 10]  # the retry waits 7 s as told, then the normal tick
    assert clock.sleeps == [7, 3]
    assert [len(s) for _, s in server.posts] == [2, 2, 2] and server.posts[0][1] == server.posts[1][1]


def test_429_with_an_http_date_retry_after() -> None:
    clock = FakeClock(NOW)
    when = "Tue, 24 Nov 2026 12:00:30 GMT"  # NOW + 30 s
    server = FakeApi(clock, [status(429, **{"Retry-After": when})])
    agent = UtilizationAgent(
        opened(two_gpus()), server.client(), "in_1", interval=60, jitter=0, clock=clock, sleep=clock.sleep
    )
    agent.run(rounds=2)
    assert server.times == [0, 30, 60]


def test_server_errors_and_unreachable_api_back_off_exponentially(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(NOW)

    def unreachable() -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    server = FakeApi(clock, [status(503), unreachable, status(500), status(408)])
    agent = UtilizationAgent(
        opened(two_gpus()), server.client(), "in_1", interval=100, jitter=0, clock=clock, sleep=clock.sleep
    )
    with caplog.at_level(logging.DEBUG):
        agent.run(rounds=2)
    assert server.times == [0, 1, 3, 7, 15, 100]  # waits 1, 2, 4, 8; then back to the normal tick
    assert clock.sleeps == [1, 2, 4, 8, 85]
    assert agent.posted == 4 and not agent.buffer
    assert "connection refused" in caplog.text


def test_the_buffer_is_bounded_keeping_the_newest_samples(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(NOW)
    down = True

    def handle(request: httpx.Request) -> httpx.Response:
        if down:
            raise httpx.ConnectError("connection refused")
        samples = json.loads(request.content)["samples"]
        posted.append(samples)
        return httpx.Response(202, json={"accepted": len(samples), "duplicates": 0})

    posted: list[list[dict[str, Any]]] = []
    client = httpx.Client(base_url="http://broker.test", transport=httpx.MockTransport(handle))
    agent = UtilizationAgent(
        opened(two_gpus()),
        client,
        "in_1",
        interval=10,
        batch_size=2,
        buffer_limit=5,
        backoff_initial=1000,  # no retry between readings: only the buffer grows
        jitter=0,
        clock=clock,
        sleep=clock.sleep,
    )
    with caplog.at_level(logging.WARNING, logger="broker.agent"):
        agent.run(rounds=4)  # 8 samples read at +0, +10, +20, +30 s
    assert agent.dropped == 3 and len(agent.buffer) == 5
    assert "dropped the 2 oldest" in caplog.text and "stopping with 5 samples" in caplog.text
    down = False
    assert agent.flush()
    assert [len(b) for b in posted] == [2, 2, 1]  # batch_size
    sent = [(datetime.fromisoformat(s["at"]) - NOW, s["gpu_index"]) for b in posted for s in b]
    assert sent == [(timedelta(seconds=10), 1)] + [
        (timedelta(seconds=t), g) for t in (20, 30) for g in (0, 1)
    ]


def test_stop_ends_the_loop_and_posts_what_is_buffered() -> None:
    clock = FakeClock(NOW)
    server = FakeApi(clock, [status(503)])
    agent = UtilizationAgent(
        opened(two_gpus()), server.client(), "in_1", interval=10, jitter=0, clock=clock, sleep=clock.sleep
    )

    def sleep_then_stop(seconds: float) -> None:
        clock.sleep(seconds)
        agent.stop.set()  # SIGTERM arrives while waiting

    agent._sleep = sleep_then_stop
    agent.run()
    assert server.times == [0, 1]  # the failed post, then the last attempt on the way out
    assert not agent.buffer and agent.posted == 2


# --- the command -------------------------------------------------------------------------------------


def cli(
    load_nvml: Callable[[], Any], client_factory: Callable[..., httpx.Client] | None = None
) -> typer.Typer:
    app = typer.Typer()
    app.command("version")(lambda: None)  # a second command, so `agent` stays a named subcommand
    if client_factory is None:
        register(app, load_nvml=load_nvml)
    else:
        register(app, load_nvml=load_nvml, client_factory=client_factory)
    return app


@pytest.mark.parametrize(
    ("nvml", "message"),
    [
        (FakeNvml(init_error=pynvml.NVMLError_LibraryNotFound), "libnvidia-ml"),
        (FakeNvml(init_error=pynvml.NVMLError_DriverNotLoaded), "driver is not loaded"),
        (FakeNvml(gpus=[]), "found no GPU"),
    ],
)
def test_cli_without_a_gpu_exits_3_with_one_line(nvml: FakeNvml, message: str) -> None:
    args = ["agent", "--api", "http://broker.test", "--key", "gpb_secret", "--instance-id", "in_1"]
    result = runner.invoke(cli(lambda: nvml), args)
    assert result.exit_code == EXIT_NO_GPU == 3
    assert result.stderr.startswith("error: no GPU to report: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "gpb_secret" not in result.output


def test_cli_without_nvidia_ml_py_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.agent import load_pynvml

    monkeypatch.setitem(sys.modules, "pynvml", None)  # the package is not installed
    args = ["agent", "--api", "http://broker.test", "--key", "k", "--instance-id", "in_1"]
    result = runner.invoke(cli(load_pynvml), args)
    assert result.exit_code == 3
    assert "pip install nvidia-ml-py" in result.stderr


def test_cli_reports_to_the_api_with_the_instance_id_from_the_environment(
    database: Database, tenant: Tenant
) -> None:
    inst = add_running_instance(database, tenant.org_id)
    key = tenant.operator["Authorization"].split()[1]
    seen: dict[str, Any] = {}

    def client_factory(base_url: str, headers: dict[str, str]) -> httpx.Client:
        seen["base_url"] = base_url
        return TestClient(create_app(database), base_url=base_url, headers=headers)  # the system clock

    env = {"GPUBROKER_INSTANCE_ID": inst, "GPUBROKER_API_KEY": key}
    result = runner.invoke(
        cli(two_gpus, client_factory),
        ["agent", "--api", "http://broker.test", "--rounds", "1", "--log-level", "debug"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert seen["base_url"] == "http://broker.test"
    with database.sessions() as session:
        assert session.scalars(
            select(UtilizationSample.gpu_index).where(UtilizationSample.instance_id == inst)
        ).all() == [0, 1]
    assert key not in result.output


def test_cli_exits_2_when_the_api_refuses_the_key(database: Database, tenant: Tenant) -> None:
    inst = add_running_instance(database, tenant.org_id)
    key = tenant.viewer["Authorization"].split()[1]

    def client_factory(base_url: str, headers: dict[str, str]) -> httpx.Client:
        return TestClient(create_app(database), base_url=base_url, headers=headers)

    args = [
        "agent",
        "--api",
        "http://testserver",
        "--key",
        key,
        "--instance-id",
        inst,
        "--log-level",
        "debug",
    ]
    result = runner.invoke(cli(two_gpus, client_factory), args)
    assert result.exit_code == EXIT_REFUSED == 2
    assert "403" in result.stderr and "operator role" in result.stderr
    assert key not in result.output


def test_cli_needs_an_instance_id() -> None:
    env = {"GPUBROKER_INSTANCE_ID": None}  # unset, whatever this machine has
    result = runner.invoke(cli(two_gpus), ["agent", "--api", "http://x", "--key", "k"], env=env)
    assert result.exit_code == 2 and "--instance-id" in result.output
