"""Properties of the workload-migration engine for any inputs: deterministic, well-formed, no flapping."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise

from hypothesis import event as note_event
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.commands import CutOver, Launch, Terminate, WaitForCheckpoint
from broker.core.migration import (
    CommitmentFreed,
    DeadlineAtRisk,
    Decision,
    LaunchRefused,
    MigrationEvent,
    MigrationPolicy,
    Move,
    MoveKind,
    Preempted,
    PreemptionNotice,
    PriceChanged,
    Rebalance,
    Refusal,
    Replacement,
    RunningWorkload,
    decide,
    launch_key,
)
from broker.core.types import CapacityType
from tests.core.migration.builders import NOW, running, workload

money = st.decimals(min_value=0, max_value=200, places=2)
minutes = st.integers(min_value=0, max_value=24 * 60)
capacity = st.sampled_from(list(CapacityType))


@st.composite
def replacements(draw: st.DrawFn) -> Replacement:
    return Replacement(
        cloud=draw(st.sampled_from(["aws", "gcp", "lambda"])),
        region=draw(st.sampled_from(["r1", "r2"])),
        zone=draw(st.sampled_from([None, "z1"])),
        instance_type=draw(st.sampled_from(["8xh100", "8xa100"])),
        capacity_type=draw(capacity),
        price_per_hour=draw(money),
        commitment_id=draw(st.sampled_from([None, "cb-1"])),
        egress_per_gb=draw(st.decimals(min_value=0, max_value="0.2", places=3)),
        meets_deadline=draw(st.booleans()),
    )


@st.composite
def situations(draw: st.DrawFn) -> tuple[MigrationEvent, RunningWorkload, list[Replacement], MigrationPolicy]:
    nodes = draw(st.integers(min_value=1, max_value=3))
    interruptible = draw(st.booleans())
    w = workload(
        nodes=nodes,
        expected_hours=Decimal(draw(st.integers(min_value=1, max_value=500))),
        checkpoint_gb=draw(money),
        restart_overhead_hours=draw(st.decimals(min_value=0, max_value=3, places=2)),
        checkpoint_interval_hours=draw(
            st.one_of(st.none(), st.decimals(min_value="0.25", max_value=4, places=2))
        ),
        deadline=draw(st.one_of(st.none(), minutes.map(lambda m: NOW + timedelta(minutes=m * 20)))),
        interruptible=interruptible,
    )
    cands = draw(st.lists(replacements(), max_size=5))
    known = [c.key for c in cands] or [("aws", "r1", "", "8xh100", "spot")]
    ids = tuple(f"i-{n}" for n in range(nodes))
    cap = draw(capacity)
    r = running(
        workload=w,
        capacity_type=cap if interruptible or cap is not CapacityType.SPOT else CapacityType.ON_DEMAND,
        price_per_hour=draw(money),
        instance_ids=ids,
        started_at=NOW - timedelta(minutes=draw(minutes)),
        progress_hours=Decimal(draw(st.integers(min_value=0, max_value=500))),
        last_checkpoint_at=draw(st.one_of(st.none(), minutes.map(lambda m: NOW - timedelta(minutes=m)))),
        generation=draw(st.integers(min_value=0, max_value=5)),
        moves=tuple(
            Move(k, known[0], NOW - timedelta(minutes=m), MoveKind.VOLUNTARY)
            for k, m in draw(st.lists(st.tuples(st.sampled_from(known), minutes), max_size=3))
        ),
        refusals=tuple(
            Refusal(k, NOW - timedelta(minutes=m))
            for k, m in draw(st.lists(st.tuples(st.sampled_from(known), minutes), max_size=2))
        ),
        reclaim_at=draw(st.one_of(st.none(), st.just(NOW + timedelta(minutes=2)))),
        lost_at=draw(st.one_of(st.none(), st.just(NOW - timedelta(minutes=1)))),
    )
    instance = st.sampled_from([*ids, "i-other"])
    event = draw(
        st.one_of(
            st.builds(Rebalance, at=st.just(NOW)),
            st.builds(DeadlineAtRisk, at=st.just(NOW)),
            st.builds(Preempted, instance_id=instance, at=st.just(NOW)),
            instance.map(lambda i: PreemptionNotice(i, at=NOW, reclaim_at=NOW + timedelta(seconds=90))),
            st.sampled_from(known).map(lambda k: LaunchRefused("cprev", k, at=NOW)),
            st.tuples(st.sampled_from([*known, r.key]), money).map(
                lambda kp: PriceChanged(kp[0], Decimal(1), kp[1], at=NOW)
            ),
            st.integers(min_value=0, max_value=32).map(lambda g: CommitmentFreed("cb-1", g, at=NOW)),
        )
    )
    policy = MigrationPolicy(
        min_dwell=timedelta(minutes=draw(st.integers(min_value=0, max_value=180))),
        move_back_cooldown=timedelta(minutes=draw(st.integers(min_value=0, max_value=720))),
        checkpoint_wait_timeout=timedelta(seconds=draw(st.integers(min_value=0, max_value=1800))),
    )
    return event, r, cands, policy


def _assert_well_formed(d: Decision, r: RunningWorkload) -> None:
    cmds = d.plan.commands
    if not d.migrates:
        assert d.move is None and d.target is None and d.reason
        return
    assert d.target is not None and d.move is not None and d.kind is not None
    assert (d.target.key, d.target.commitment_id) != (r.key, r.commitment_id)
    launch = cmds[0]
    assert isinstance(launch, Launch) and launch.count == r.workload.nodes
    rest = list(cmds[1:])
    if rest and isinstance(rest[0], WaitForCheckpoint):
        assert rest[0].timeout_seconds > 0
        if d.kind is MoveKind.FORCED and r.reclaim_at is not None:
            assert rest[0].timeout_seconds <= (r.reclaim_at - NOW).total_seconds()
        rest.pop(0)
    cut = rest.pop(0)
    assert isinstance(cut, CutOver) and cut.launch_key == launch.idempotency_key
    assert [t.instance_id for t in rest if isinstance(t, Terminate)] == list(r.instance_ids)
    assert len(rest) == r.workload.nodes
    assert len({c.idempotency_key for c in cmds}) == len(cmds)
    if d.kind is MoveKind.VOLUNTARY:
        assert d.economics is not None and d.economics.saving > d.economics.cost.total
    if d.kind is MoveKind.DEADLINE:
        assert d.target.capacity_type is not CapacityType.SPOT and d.target.meets_deadline
    if d.target.capacity_type is CapacityType.SPOT:
        assert r.workload.interruptible


@settings(max_examples=300, deadline=None)
@given(situations())
def test_deterministic_and_well_formed(situation):
    event, r, cands, policy = situation
    first = decide(event, r, cands, policy, NOW)
    note_event(f"{type(event).__name__}: {first.kind or 'stay'}")
    assert decide(event, r, list(cands), policy, NOW) == first
    _assert_well_formed(first, r)


# --- no flapping between two offers ----------------------------------------------------------

OD = CapacityType.ON_DEMAND
A = Replacement("aws", "us-east-1", None, "p5.48xlarge", OD, Decimal(40), egress_per_gb=Decimal("0.09"))
B = Replacement("gcp", "us-central1", None, "a3-highgpu-8g", OD, Decimal(40), egress_per_gb=Decimal("0.12"))


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=1, max_value=240), st.decimals(min_value=1, max_value=100, places=2)),
        min_size=2,
        max_size=40,
    ),
    dwell=st.integers(min_value=0, max_value=180),
    cooldown=st.integers(min_value=0, max_value=720),
    checkpoint_gb=st.decimals(min_value=0, max_value=500, places=1),
    overhead=st.decimals(min_value=0, max_value=2, places=2),
    nodes=st.integers(min_value=1, max_value=2),
)
def test_alternating_price_changes_never_flap(steps, dwell, cooldown, checkpoint_gb, overhead, nodes):
    policy = MigrationPolicy(
        min_dwell=timedelta(minutes=dwell), move_back_cooldown=timedelta(minutes=cooldown)
    )
    w = workload(
        nodes=nodes,
        expected_hours=Decimal(10_000),
        checkpoint_gb=checkpoint_gb,
        restart_overhead_hours=overhead,
        checkpoint_interval_hours=None,
    )
    book = {A.key: A.price_per_hour, B.key: B.price_per_hour}
    here, there = A, B
    now: datetime = NOW
    r = running(
        workload=w, cloud=A.cloud, region=A.region, zone=None, instance_type=A.instance_type,
        price_per_hour=book[A.key], instance_ids=tuple(f"i-0-{n}" for n in range(nodes)),
        started_at=now, progress_hours=Decimal(0), last_checkpoint_at=None, generation=0,
    )
    moves: list[Move] = []
    for i, (gap, price) in enumerate(steps):
        now += timedelta(minutes=gap)
        changed = (A, B)[i % 2]
        event = PriceChanged(changed.key, book[changed.key], price, at=now)
        # The caller's snapshot carries the price it knew before the event; the event is newer.
        r = replace(r, progress_hours=r.progress_hours + Decimal(gap) / 60, price_per_hour=book[here.key])
        book[changed.key] = price
        candidate = replace(there, price_per_hour=book[there.key])
        d = decide(event, r, [candidate], policy, now)
        if not d.migrates:
            continue
        assert d.kind is MoveKind.VOLUNTARY and d.economics is not None and d.move is not None
        # Never when saving ≤ move cost, recomputed here from the documented formula: no
        # checkpoint schedule, so W = the 15 min timeout and L = 0.
        n, remaining = Decimal(nodes), Decimal(10_000) - r.progress_hours
        p_cur, p_new = book[here.key], book[there.key]
        saving = (p_cur - p_new) * n * remaining
        cost = checkpoint_gb * there.egress_per_gb + overhead * p_new * n + Decimal("0.25") * p_cur * n
        assert d.economics.saving == saving and d.economics.cost.total == cost
        assert saving > cost
        moves.append(d.move)
        r = replace(
            r, cloud=there.cloud, region=there.region, instance_type=there.instance_type,
            price_per_hour=book[there.key], instance_ids=tuple(f"i-{i + 1}-{k}" for k in range(nodes)),
            started_at=now, generation=r.generation + 1, moves=(*r.moves, d.move),
        )
        here, there = there, here
    note_event(f"voluntary moves: {min(len(moves), 3)}{'+' if len(moves) >= 3 else ''}")
    for earlier, later in pairwise(moves):
        # With two offers every second move goes back: never within the cooldown, never within dwell.
        assert later.to_key == earlier.from_key
        assert later.at - earlier.at >= policy.move_back_cooldown
        assert later.at - earlier.at >= policy.min_dwell
    window = policy.move_back_cooldown
    for m in moves:
        assert sum(1 for o in moves if m.at <= o.at < m.at + window) <= 1 or window == timedelta(0)


# --- launch keys -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=3), replacements()), min_size=2, max_size=12))
def test_launch_key_is_unique_per_generation_and_offer(pairs):
    seen: dict[str, tuple[int, object, object]] = {}
    for generation, target in pairs:
        key = launch_key("w1", generation, target)
        identity = (generation, target.key, target.commitment_id)
        assert seen.setdefault(key, identity) == identity


@settings(max_examples=100, deadline=None)
@given(st.lists(replacements(), min_size=1, max_size=6, unique_by=lambda c: (c.key, c.commitment_id)))
def test_a_chain_of_refusals_never_reuses_a_launch_key(cands):
    r = running(lost_at=NOW, workload=workload(interruptible=True))
    cands = [c for c in cands if (c.key, c.commitment_id) != (r.key, r.commitment_id)]
    used: set[str] = set()
    now = NOW
    for _ in range(len(cands) + 1):
        d = decide(Rebalance(at=now), r, cands, MigrationPolicy(), now)
        if not d.migrates:
            break
        launch = d.plan.commands[0]
        assert isinstance(launch, Launch) and launch.idempotency_key not in used
        used.add(launch.idempotency_key)
        assert d.target is not None
        refused = LaunchRefused(launch.idempotency_key, d.target.key, at=now)
        after = decide(refused, r, cands, MigrationPolicy(), now)
        assert after.refusal is not None
        r = replace(r, generation=r.generation + 1, refusals=(*r.refusals, after.refusal))
        now += timedelta(seconds=1)
    # Every offer key was tried at most once before its backoff ran out.
    assert len(used) <= len({c.key for c in cands})
