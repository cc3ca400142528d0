"""The simulated cloud outlives its caller (a state file shared by processes) and pushes events."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from broker.core.errors import ProviderError, Transient
from broker.core.ports import InstanceState, LaunchRequest
from broker.core.types import CapacityType
from providers.registry import discover
from providers.sim import (
    PREEMPTED,
    PREEMPTION_NOTICE,
    SimEvent,
    SimReservation,
    SimStateError,
    SimulatedCloud,
    from_environment,
)
from tests.providers.sim_kit import ManualClock, trace

REPO = Path(__file__).resolve().parents[2]
WAIT = 10.0  # seconds: generous, only a bound on a hang, never a threshold the test measures


def cloud_on(
    path: Path | None, clock: ManualClock, values: list[int | None] | None = None, **options: object
):
    reservations = [SimReservation("res-1", "us-central1-a", "a3-highgpu-8g", 1, Decimal("30"))]
    return SimulatedCloud(
        [trace(values or [16] * 10)],
        clock=clock,
        speedup=1,
        notice_seconds=120,
        reservations=reservations,
        state_path=path,
        **options,  # type: ignore[arg-type]
    )


def request(
    instance_id: str, capacity: CapacityType = CapacityType.ON_DEMAND, size: str = "8g"
) -> LaunchRequest:
    return LaunchRequest(
        instance_id,
        f"a3-highgpu-{size}",
        "us-central1",
        capacity,
        reservation_id="res-1" if capacity is CapacityType.RESERVED else None,
    )


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter of this virtualenv (a second process on the same state file)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


# --- persistence ---------------------------------------------------------------------------------


def test_a_second_object_on_the_file_sees_every_field_and_the_first_sees_its_terminations(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    state = tmp_path / "sim-cloud.json"
    a = cloud_on(state, clock)
    launched = [
        a.launch(request("od-job")),
        a.launch(request("spot-job", CapacityType.SPOT, "2g")),
        a.launch(request("res-job", CapacityType.RESERVED)),
    ]
    a.reclaim("spot-job")  # a notice: state, reason and notice time must travel too
    clock.advance(seconds=30)

    b = cloud_on(state, clock)
    seen = {i.instance_id: i for i in b.list_instances()}
    assert seen["od-job"] == launched[0]  # every Instance field, Decimal price and times included
    assert seen["res-job"] == launched[2] and seen["res-job"].price_per_hour == Decimal("30")
    assert seen["spot-job"] == a.get_instance("spot-job", region="us-central1")
    assert seen["spot-job"].state_reason == "preemption-notice"
    clock.advance(seconds=90)  # 120 s after the notice A gave: B preempts it on A's schedule
    preempted = b.get_instance("spot-job", region="us-central1")
    assert preempted is not None and preempted.state is InstanceState.PREEMPTED

    b.terminate("res-job", region="us-central1")
    gone = a.get_instance("res-job", region="us-central1")
    assert gone is not None and gone.state is InstanceState.TERMINATED
    assert a.get_instance("spot-job", region="us-central1") == preempted
    # The reservation B freed is free for A; the id counter is shared (no duplicate provider id).
    again = a.launch(request("res-job-2", CapacityType.RESERVED))
    assert again.provider_instance_id not in {i.provider_instance_id for i in launched}
    assert b.launch(request("od-job-2")).provider_instance_id not in {
        again.provider_instance_id,
        *(i.provider_instance_id for i in launched),
    }


def test_the_file_is_compact_json_with_decimal_strings_and_iso_times(tmp_path: Path) -> None:
    state = tmp_path / "sim-cloud.json"
    cloud = cloud_on(state, ManualClock())
    cloud.launch(request("od-job"))
    text = state.read_text()
    assert "\n" not in text and ": " not in text
    row = json.loads(text)["instances"][0]
    assert row["price_per_hour"] == "82.525432"  # 8 GPUs x 10.315679, as a string
    assert datetime.fromisoformat(row["launched_at"]) == datetime(2025, 10, 4, tzinfo=UTC)


def test_a_launch_whose_response_was_lost_is_in_the_file(tmp_path: Path) -> None:
    clock = ManualClock()
    state = tmp_path / "sim-cloud.json"
    a = cloud_on(state, clock)
    a.lose_next_launch_response()
    with pytest.raises(Transient):
        a.launch(request("lost-job"))
    assert [i.instance_id for i in cloud_on(state, clock).list_instances()] == ["lost-job"]


def test_simulated_time_continues_across_a_reload_and_never_goes_back(tmp_path: Path) -> None:
    clock = ManualClock()
    state = tmp_path / "sim-cloud.json"
    a = SimulatedCloud([trace([16] * 10)], clock=clock, speedup=60, state_path=state)
    start = a.now()
    clock.advance(minutes=10)
    a.list_instances()  # 60 ticks later: saved
    before = a.now()
    assert before - start == timedelta(hours=10)
    # A restart with the same wall clock carries on where the cloud was, not at the trace start.
    assert SimulatedCloud([trace([16] * 10)], clock=clock, speedup=60, state_path=state).now() == before
    # One whose wall clock is an hour behind (or runs at another speed) does not go back in time.
    behind = ManualClock(clock.now - timedelta(hours=1))
    restarted = SimulatedCloud([trace([16] * 10)], clock=behind, speedup=1, state_path=state)
    assert restarted.now() >= before
    behind.advance(hours=2)
    assert restarted.now() > before


def test_from_environment_keeps_the_cloud_in_gpubroker_sim_state(tmp_path: Path) -> None:
    state = tmp_path / "home" / "sim-cloud.json"  # the folder is made on demand
    first = from_environment({"GPUBROKER_SIM_STATE": str(state)})
    assert first.state_path == state and state.is_file()
    first.launch(request("env-job", size="1g"))
    second = from_environment({"GPUBROKER_SIM_STATE": str(state)})
    assert [i.instance_id for i in second.list_instances()] == ["env-job"]
    assert from_environment({}).state_path is None


# --- damaged files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b'{"format":1,"generation":3,"next_id":2,"clock":{"wall":"2026-11-24T00:00:00+00:00"',  # cut short
        b'{"format":99,"generation":1}',
        b'{"format":1,"generation":1,"next_id":1,"clock":{"wall":"2026-11-24T00:00:00",'
        b'"simulated":"2026-11-24T00:00:00"},"ticks":{},"instances":[]}',  # times without a zone
        b'{"format":1,"generation":1,"next_id":2,"clock":{"wall":"2026-11-24T00:00:00+00:00",'
        b'"simulated":"2026-11-24T00:00:00+00:00"},"ticks":{},"instances":[{"instance_id":"x"}]}',
    ],
    ids=["empty", "not-json", "truncated", "other-format", "naive-times", "instance-missing-fields"],
)
def test_a_damaged_state_file_is_a_clear_error_naming_it_and_is_left_alone(
    tmp_path: Path, content: bytes
) -> None:
    state = tmp_path / "sim-cloud.json"
    state.write_bytes(content)
    with pytest.raises(SimStateError, match=str(state)):
        cloud_on(state, ManualClock())
    assert state.read_bytes() == content


def test_a_file_damaged_while_running_fails_the_next_call_instead_of_forgetting(tmp_path: Path) -> None:
    state = tmp_path / "sim-cloud.json"
    cloud = cloud_on(state, ManualClock())
    cloud.launch(request("od-job"))
    state.write_text("garbage")
    with pytest.raises(SimStateError, match="cannot be used"):
        cloud.list_instances()
    status = cloud.check()
    assert not status.reachable and str(state) in status.detail
    assert state.read_text() == "garbage"


def test_serve_reports_a_damaged_sim_state_instead_of_starting_an_empty_cloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "sim-cloud.json"
    state.write_text("{")
    monkeypatch.setenv("GPUBROKER_PROVIDERS", "sim")
    monkeypatch.setenv("GPUBROKER_SIM_STATE", str(state))
    sim = next(e for e in discover() if e.info.name == "sim")
    assert not sim.configured and str(state) in (sim.problem or "")


# --- other processes, crashes ---------------------------------------------------------------------

CHILD_PRELUDE = """
    import sys
    from pathlib import Path
    from broker.core.ports import LaunchRequest
    from broker.core.types import CapacityType
    from providers.sim import from_environment

    state = Path(sys.argv[1])
    cloud = from_environment({"GPUBROKER_SIM_STATE": str(state)})

    def on_demand(instance_id):
        return LaunchRequest(instance_id, "a3-highgpu-1g", "us-central1", CapacityType.ON_DEMAND)
"""


def test_another_process_launches_and_sees_our_termination(tmp_path: Path) -> None:
    state = tmp_path / "sim-cloud.json"
    ours = from_environment({"GPUBROKER_SIM_STATE": str(state)})
    child = run_python(
        CHILD_PRELUDE + "    print(cloud.launch(on_demand('from-child')).provider_instance_id)\n", str(state)
    )
    seen = ours.get_instance("from-child", region="us-central1")
    assert seen is not None and seen.state is InstanceState.RUNNING
    assert seen.provider_instance_id == child.stdout.strip()

    ours.terminate("from-child", region="us-central1")
    child = run_python(
        CHILD_PRELUDE + "    print(cloud.get_instance('from-child', region='us-central1').state.value)\n",
        str(state),
    )
    assert child.stdout.strip() == "terminated"


def test_two_processes_launching_at_once_lose_nothing_and_share_one_id_counter(tmp_path: Path) -> None:
    state = tmp_path / "sim-cloud.json"
    code = (
        CHILD_PRELUDE + "    for n in range(30):\n        cloud.launch(on_demand(f'{sys.argv[2]}-{n:02d}'))\n"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(state), name], cwd=REPO)
        for name in ("left", "right")
    ]
    assert [child.wait(60) for child in children] == [0, 0]
    instances = from_environment({"GPUBROKER_SIM_STATE": str(state)}).list_instances()
    assert len(instances) == 60
    assert len({i.provider_instance_id for i in instances}) == 60


def test_kill_9_right_after_launches_return_keeps_every_returned_launch(tmp_path: Path) -> None:
    state = tmp_path / "sim-cloud.json"
    code = CHILD_PRELUDE + textwrap.indent(
        textwrap.dedent("""
        for n in range(60):
            cloud.launch(on_demand(f"crash-{n:02d}"))
            print(f"crash-{n:02d}", flush=True)  # the caller saw it return
        import time
        time.sleep(600)
        """),
        "    ",
    )
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(state)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        returned = [child.stdout.readline().strip() for _ in range(5)]
        os.kill(child.pid, signal.SIGKILL)  # most likely in the middle of the sixth launch
        child.wait(WAIT)
        returned += [line.strip() for line in child.stdout if line.strip()]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(WAIT)
    assert returned[:5] == [f"crash-{n:02d}" for n in range(5)]

    survivors = {
        i.instance_id for i in from_environment({"GPUBROKER_SIM_STATE": str(state)}).list_instances()
    }
    assert set(returned) <= survivors  # every launch that returned is in the file
    assert not list(tmp_path.glob("*.tmp"))  # a killed writer's temporary file is swept on open


def test_opening_sweeps_temporary_files_a_killed_writer_left(tmp_path: Path) -> None:
    state = tmp_path / "sim-cloud.json"
    cloud_on(state, ManualClock()).launch(request("od-job"))
    (tmp_path / ".sim-cloud.json.k1ll3d.tmp").write_text('{"format":1,"gener')  # half written
    (tmp_path / ".unrelated.tmp").write_text("not ours")
    reopened = cloud_on(state, ManualClock())
    assert [i.instance_id for i in reopened.list_instances()] == ["od-job"]
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == [".unrelated.tmp"]


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_half_state(tmp_path: Path) -> None:
    # A real partial write: the file size limit lets the new state's first bytes reach the disk,
    # then fails the write with EFBIG (in a child, so the limit does not touch the test run).
    state = tmp_path / "sim-cloud.json"
    code = CHILD_PRELUDE + textwrap.indent(
        textwrap.dedent("""
        import json, resource
        from broker.core.errors import Transient
        for n in range(3):
            cloud.launch(on_demand(f"kept-{n}"))
        before = state.read_bytes()
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 16, resource.RLIM_INFINITY))
        try:
            cloud.launch(on_demand("too-big"))
            outcome = "launched"
        except Transient as exc:
            outcome = exc.code
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        intact = state.read_bytes() == before
        leftovers = [p.name for p in state.parent.iterdir() if p.name.endswith(".tmp")]
        after_failure = sorted(i.instance_id for i in cloud.list_instances())
        cloud.launch(on_demand("too-big"))  # the retry, once the disk has room again
        print(json.dumps({"outcome": outcome, "intact": intact, "leftovers": leftovers,
                          "after_failure": after_failure}))
        """),
        "    ",
    )
    result = json.loads(run_python(code, str(state)).stdout)
    assert result["outcome"] == "state-io"  # a retryable provider error, not a raw OSError
    assert result["intact"] and result["leftovers"] == []
    assert result["after_failure"] == ["kept-0", "kept-1", "kept-2"]  # the failed launch did not happen
    assert sorted(
        i.instance_id for i in from_environment({"GPUBROKER_SIM_STATE": str(state)}).list_instances()
    ) == [
        "kept-0",
        "kept-1",
        "kept-2",
        "too-big",
    ]


# --- events ----------------------------------------------------------------------------------------


class Collector:
    """A subscriber that records events and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[SimEvent] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def __call__(self, event: SimEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, kind: str, instance_id: str) -> SimEvent:
        def found() -> SimEvent | None:
            return next(
                (e for e in self.events if e.kind == kind and e.instance.instance_id == instance_id), None
            )

        with self._changed:
            assert self._changed.wait_for(lambda: found() is not None, WAIT), f"no {kind} of {instance_id}"
            event = found()
        assert event is not None
        return event

    def kinds(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(e.kind, e.instance.instance_id) for e in self.events]


def test_a_trace_drop_gives_one_notice_then_one_preemption(tmp_path: Path) -> None:
    clock = ManualClock()
    cloud = cloud_on(None, clock, [16, 8])
    cloud.launch(request("old-job", CapacityType.SPOT))
    clock.advance(seconds=1)
    cloud.launch(request("new-job", CapacityType.SPOT))
    events = Collector()
    cloud.subscribe(events)
    assert cloud.tick() == 0
    clock.advance(seconds=600)  # tick 1: 8 GPUs left, we hold 16: the newest is reclaimed
    assert cloud.tick() == 1 and cloud.tick() == 0
    notice = events.events[0]
    seen_at = cloud.now()  # the drop is noticed when the clock is first read in tick 1
    assert (notice.kind, notice.instance.instance_id, notice.at) == (PREEMPTION_NOTICE, "new-job", seen_at)
    assert (
        notice.instance.state is InstanceState.RUNNING and notice.instance.state_reason == PREEMPTION_NOTICE
    )
    clock.advance(seconds=120)
    cloud.list_instances()  # a call, not the ticker, preempts it: the next tick delivers the event
    assert cloud.tick() == 1 and cloud.tick() == 0
    preempted = events.events[1]
    assert (preempted.kind, preempted.at) == (PREEMPTED, seen_at + timedelta(seconds=120))
    assert preempted.instance.state is InstanceState.PREEMPTED
    assert events.kinds() == [(PREEMPTION_NOTICE, "new-job"), (PREEMPTED, "new-job")]


def test_the_ticker_delivers_a_reclaim_notice_at_once_and_the_preemption_on_a_tick() -> None:
    clock = ManualClock()
    cloud = cloud_on(None, clock)
    cloud.launch(request("spot-job", CapacityType.SPOT))
    events = Collector()
    cloud.subscribe(events)
    cloud.start_ticker(interval_seconds=3600)  # ticks once now, then not within this test
    try:
        cloud.reclaim("spot-job")
        # Delivered although the next tick is an hour away: a queued event wakes the ticker.
        assert events.wait_for(PREEMPTION_NOTICE, "spot-job").at == datetime(2025, 10, 4, tzinfo=UTC)
        clock.advance(seconds=120)
        cloud.get_instance("spot-job", region="us-central1")  # the preemption, found by a call
        events.wait_for(PREEMPTED, "spot-job")
    finally:
        cloud.stop_ticker()
    cloud.tick()
    assert events.kinds() == [(PREEMPTION_NOTICE, "spot-job"), (PREEMPTED, "spot-job")]


def test_the_ticker_advances_the_clock_by_itself() -> None:
    clock = ManualClock()
    cloud = cloud_on(None, clock, [16, 8])
    cloud.launch(request("old-job", CapacityType.SPOT))
    clock.advance(seconds=1)
    cloud.launch(request("new-job", CapacityType.SPOT))
    events = Collector()
    cloud.subscribe(events)
    cloud.start_ticker(interval_seconds=0.01)
    try:
        clock.advance(seconds=600)  # nothing but the ticker calls the cloud from here on
        events.wait_for(PREEMPTION_NOTICE, "new-job")
        clock.advance(seconds=120)
        events.wait_for(PREEMPTED, "new-job")
    finally:
        cloud.stop_ticker()
    assert events.kinds() == [(PREEMPTION_NOTICE, "new-job"), (PREEMPTED, "new-job")]


def test_a_raising_subscriber_neither_stops_the_ticker_nor_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    cloud = cloud_on(None, clock)
    for name in ("first-job", "second-job"):
        cloud.launch(request(name, CapacityType.SPOT, "1g"))

    def broken(event: SimEvent) -> None:
        raise RuntimeError("subscriber bug")

    cloud.subscribe(broken)
    events = Collector()
    cloud.subscribe(events)
    cloud.start_ticker(interval_seconds=0.01)
    try:
        with caplog.at_level(logging.ERROR, logger="providers.sim"):
            cloud.reclaim("first-job")
            events.wait_for(PREEMPTION_NOTICE, "first-job")
            cloud.reclaim("second-job")  # after the first failure: the ticker is still delivering
            events.wait_for(PREEMPTION_NOTICE, "second-job")
    finally:
        cloud.stop_ticker()
    assert "subscriber failed" in caplog.text and "subscriber bug" in caplog.text


def test_unsubscribe_stops_delivery() -> None:
    clock = ManualClock()
    cloud = cloud_on(None, clock)
    cloud.launch(request("spot-job", CapacityType.SPOT))
    events = Collector()
    unsubscribe = cloud.subscribe(events)
    stays = Collector()
    cloud.subscribe(stays)
    unsubscribe()
    cloud.reclaim("spot-job")
    assert cloud.deliver_events() == 1
    assert events.kinds() == [] and stays.kinds() == [(PREEMPTION_NOTICE, "spot-job")]


def test_events_made_by_another_object_on_the_file_are_delivered_once(tmp_path: Path) -> None:
    clock = ManualClock()
    state = tmp_path / "sim-cloud.json"
    listener = cloud_on(state, clock, [16, 8])
    other = cloud_on(state, clock, [16, 8])  # e.g. the API process, with no subscribers
    other.launch(request("old-job", CapacityType.SPOT))
    clock.advance(seconds=1)
    other.launch(request("new-job", CapacityType.SPOT))
    events = Collector()
    listener.subscribe(events)
    listener.tick()
    clock.advance(seconds=600)
    other.list_instances()  # the other object sees the drop first and saves the notice
    assert listener.tick() == 1 and listener.tick() == 0
    clock.advance(seconds=120)
    other.list_instances()
    assert listener.tick() == 1 and listener.tick() == 0
    assert events.kinds() == [(PREEMPTION_NOTICE, "new-job"), (PREEMPTED, "new-job")]
    assert events.events[0].instance.state is InstanceState.RUNNING
    assert events.events[1].at == events.events[0].at + timedelta(seconds=120)


def test_a_damaged_file_does_not_stop_the_ticker(tmp_path: Path) -> None:
    clock = ManualClock()
    state = tmp_path / "sim-cloud.json"
    cloud = cloud_on(state, clock)
    cloud.launch(request("spot-job", CapacityType.SPOT))
    good = state.read_bytes()
    events = Collector()
    cloud.subscribe(events)
    failed = threading.Event()

    class TickerFailure(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "ticker failed" in record.getMessage():
                failed.set()

    handler = TickerFailure()
    logging.getLogger("providers.sim").addHandler(handler)
    state.write_text("garbage")
    cloud.start_ticker(interval_seconds=0.01)
    try:
        assert failed.wait(WAIT)  # the ticker met the damaged file and said so
        with pytest.raises(ProviderError):
            cloud.reclaim("spot-job")
        state.write_bytes(good)  # repaired: the ticker carries on and the reclaim works
        cloud.reclaim("spot-job")
        events.wait_for(PREEMPTION_NOTICE, "spot-job")
    finally:
        cloud.stop_ticker()
        logging.getLogger("providers.sim").removeHandler(handler)
