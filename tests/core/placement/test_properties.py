"""Properties of placement over random snapshots and workloads (hypothesis).

Both paths choose the same candidate; a chosen candidate passes every filter and fits every
capacity; a deadline that non-spot capacity could meet is never missed and spot never puts it
out of reach; decisions are deterministic; a batch never takes more than there is.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.placement import (
    Location,
    PlacementDecision,
    PlacementSnapshot,
    explain,
    place,
    place_batch,
)
from broker.core.placement.cost import hours_in_microseconds, slack_microseconds
from broker.core.placement.decision import Candidate
from broker.core.placement.explain import candidate_cost, candidates
from broker.core.placement.filters import CANDIDATE_FILTERS, COST_FILTERS, spot_deadline_safety
from broker.core.placement.request import Request
from broker.core.types import Availability, CapacityType
from broker.core.workload import (
    Budget,
    CapacityPreference,
    Commitment,
    GangScope,
    PreemptionRate,
    Quota,
    Workload,
)
from tests.core.placement.builders import NOW, OD, RESERVED, SPOT, offer

D = Decimal
PLACES = (("aws", "us-east-1", "a"), ("aws", "us-east-1", "b"), ("aws", "eu-west-1", "a"),
          ("gcp", "us-central1", "c"), ("lambda", "us-east-1", None))
GPUS = ("H100", "A100")
# Weighted towards matches (H100, 8 GPUs, AUTO, interruptible) so most examples place something.
GPU_DRAW = ("H100", "H100", "A100")
COUNT_DRAW = (8, 8, 8, 1)
AVAILABILITY_DRAW = (
    Availability.UNKNOWN, Availability.AVAILABLE, Availability.LIMITED, Availability.UNAVAILABLE
)
PRICES = tuple(D(p) for p in ("0", "1", "2", "2.5", "4", "8", "8", "16", "20"))
HOURS = tuple(D(h) for h in ("0.25", "0.5", "1", "2", "5", "10", "24"))

offers_st = st.builds(
    lambda place, gpu, count, capacity, price, age, availability, kind: offer(
        str(price), cloud=place[0], region=place[1], zone=place[2], gpu=gpu, count=count, capacity=capacity,
        instance_type=f"{gpu.lower()}x{count}-{kind}", observed_at=NOW - timedelta(hours=age),
        availability=availability,
    ),
    st.sampled_from(PLACES),
    st.sampled_from(GPU_DRAW),
    st.sampled_from(COUNT_DRAW),
    st.sampled_from((OD, OD, OD, SPOT, SPOT, SPOT, RESERVED)),
    st.sampled_from(PRICES),
    st.sampled_from((0, 1, 30, 100)),
    st.sampled_from(AVAILABILITY_DRAW),
    st.sampled_from(("a", "b")),
)


@st.composite
def snapshots(draw: st.DrawFn) -> PlacementSnapshot:
    offers = draw(st.lists(offers_st, min_size=2, max_size=12))
    available = {o.key: draw(st.sampled_from((None, 3, 2, 1, 0))) for o in offers}
    commitments = []
    for i in range(draw(st.integers(0, 2))):
        cloud, region, zone = draw(st.sampled_from(PLACES))
        count = draw(st.sampled_from((8, 16, 24)))
        commitments.append(
            Commitment(
                commitment_id=f"c{i}", cloud=cloud, region=region, accelerator=draw(st.sampled_from(GPUS)),
                gpu_count=count, gpus_in_use=draw(st.integers(0, count)),
                starts_at=NOW + timedelta(hours=draw(st.sampled_from((-100, -1, 2)))),
                ends_at=NOW + timedelta(hours=draw(st.sampled_from((3, 12, 1000)))),
                price_per_gpu_hour=D("2"), zone=draw(st.sampled_from((None, zone))),
            )
        )
    quotas = [
        Quota(
            cloud,
            max_gpus=draw(st.sampled_from((40, 16, 8, 0))),
            region=draw(st.sampled_from((None, region))),
            capacity_type=draw(st.sampled_from((None, OD, SPOT, RESERVED))),
        )
        for cloud, region, _ in draw(st.lists(st.sampled_from(PLACES), max_size=2))
    ]
    budgets = []
    if draw(st.booleans()):
        budgets.append(Budget("p", max_gpus=draw(st.sampled_from((None, 8, 16, 64))),
                              max_usd_per_month=draw(st.sampled_from((None, D("2000"), D("100"))))))
    rate = st.sampled_from((D("0"), D("0.01"), D("0.5")))
    rates = [
        PreemptionRate(o.cloud, o.region, o.instance_type, draw(rate))
        for o in offers if o.capacity_type is SPOT and draw(st.booleans())
    ]
    return PlacementSnapshot(
        now=NOW, offers=tuple(offers), available=available, commitments=tuple(commitments),
        quotas=tuple(quotas), budgets=tuple(budgets), preemption_rates=tuple(rates),
        stale_after=draw(st.sampled_from((None, timedelta(days=2)))),
    )


@st.composite
def workloads(draw: st.DrawFn, workload_id: str = "w") -> Workload:
    interruptible = draw(st.sampled_from((True, True, False)))
    capacity = draw(st.sampled_from((*CapacityPreference, CapacityPreference.AUTO, CapacityPreference.AUTO)))
    if not interruptible and capacity is CapacityPreference.SPOT:
        capacity = CapacityPreference.AUTO
    deadline_hours = draw(st.sampled_from((None, 1, 6, 11, 13, 20, 30, 60)))
    return Workload(
        workload_id=workload_id,
        gpu_types=tuple(draw(st.lists(st.sampled_from(GPU_DRAW), min_size=1, max_size=2, unique=True))),
        gpus_per_node=draw(st.sampled_from(COUNT_DRAW)),
        nodes=draw(st.sampled_from((1, 1, 2, 3))),
        gang=draw(st.sampled_from(tuple(GangScope))),
        expected_hours=draw(st.sampled_from(HOURS)),
        restart_overhead_hours=draw(st.sampled_from((D(0), D("0.25"), D("1")))),
        checkpoint_interval_hours=draw(st.sampled_from((None, D("0.5"), D("2")))),
        checkpoint_gb=draw(st.sampled_from((D(0), D("50")))),
        capacity=capacity,
        interruptible=interruptible,
        max_price_per_gpu_hour=draw(st.sampled_from((None, None, D("1"), D("2.5")))),
        deadline=None if deadline_hours is None else NOW + timedelta(hours=deadline_hours),
        denied_clouds=draw(st.sampled_from((frozenset(), frozenset(), frozenset({"gcp"})))),
        allowed_regions=draw(st.sampled_from((frozenset(), frozenset(), frozenset({"us-east-1"})))),
        project=draw(st.sampled_from((None, "p"))),
    )


origins = st.sampled_from((None, Location("aws", "us-east-1", "a"), Location("gcp", "us-central1")))


def passes_all_but_deadline(request: Request, candidate: Candidate) -> bool:
    if any(f.check(request, candidate) is not None for f in CANDIDATE_FILTERS):
        return False
    cost = candidate_cost(request, candidate)
    return all(f.check(request, candidate, cost) is None for f in COST_FILTERS)


@settings(max_examples=200, deadline=None)
@given(snapshots(), workloads(), origins)
def test_fast_and_explaining_paths_choose_the_same_candidate(
    snap: PlacementSnapshot, w: Workload, origin: Location | None
) -> None:
    fast, full = place(w, snap, origin=origin), explain(w, snap, origin=origin)
    assert fast.placement == full.placement
    assert (fast.wait_reason is None) == (full.wait_reason is None)
    assert full.explanation is not None
    considered = len(full.explanation.scored) + len(full.explanation.rejected)
    assert considered == len(snap.offers) + len(snap.commitments)


@settings(max_examples=200, deadline=None)
@given(snapshots(), workloads(), origins)
def test_the_chosen_candidate_passes_every_filter_and_fits(
    snap: PlacementSnapshot, w: Workload, origin: Location | None
) -> None:
    decision = explain(w, snap, origin=origin)
    if decision.placement is None:
        return
    assert decision.explanation is not None
    chosen = decision.placement.candidate
    assert chosen not in {r.candidate for r in decision.explanation.rejected}
    request = Request(w, snap, origin=origin)
    assert passes_all_but_deadline(request, chosen)
    if chosen.commitment is not None:
        assert chosen.commitment.gpus_free >= w.total_gpus
        assert chosen.commitment.in_force(snap.now)
    else:
        assert chosen.offer is not None and chosen.capacity_type is not RESERVED
        free = snap.available.get(chosen.offer.key)
        assert free is None or free >= w.nodes
        assert chosen.offer.accelerator_count == w.gpus_per_node
    if w.deadline is not None:
        slack = slack_microseconds(snap.now, w.deadline)
        assert hours_in_microseconds(decision.placement.cost.wall_hours) <= slack


@settings(max_examples=200, deadline=None)
@given(snapshots(), workloads())
def test_never_misses_a_deadline_non_spot_capacity_could_meet(snap: PlacementSnapshot, w: Workload) -> None:
    decision = place(w, snap)
    request = Request(w, snap)
    fallbacks = [
        c for c in candidates(request)
        if c.capacity_type is not SPOT and passes_all_but_deadline(request, c)
    ]
    if w.deadline is not None:
        slack = slack_microseconds(snap.now, w.deadline)
        if fallbacks and hours_in_microseconds(request.terms.wall_hours) <= slack:
            assert decision.placement is not None, decision.wait_reason
    placement = decision.placement
    if placement is not None and placement.capacity_type is SPOT:
        # Spot never puts the deadline out of reach: the worst case still fits, or nothing else could run.
        assert spot_deadline_safety(request, placement.candidate, fallback_exists=bool(fallbacks)) is None


@settings(max_examples=150, deadline=None)
@given(snapshots(), workloads(), origins)
def test_decisions_are_deterministic(snap: PlacementSnapshot, w: Workload, origin: Location | None) -> None:
    rebuilt = PlacementSnapshot(
        now=snap.now, offers=snap.offers, available=dict(snap.available), commitments=snap.commitments,
        quotas=snap.quotas, budgets=snap.budgets, preemption_rates=snap.preemption_rates,
        stale_after=snap.stale_after,
    )
    assert place(w, snap, origin=origin) == place(w, rebuilt, origin=origin)
    assert explain(w, snap, origin=origin) == explain(w, rebuilt, origin=origin)


@settings(max_examples=100, deadline=None)
@given(snapshots(), st.lists(st.integers(0, 10**6), min_size=1, max_size=8, unique=True), st.data())
def test_a_batch_never_takes_more_than_there_is(
    snap: PlacementSnapshot, ids: list[int], data: st.DataObject
) -> None:
    batch = [data.draw(workloads(f"w{i}")) for i in ids]
    result = place_batch(batch, snap)
    again = place_batch(list(reversed(batch)), snap)
    assert result == again  # the order is the batch's own, not the caller's
    by_id = {w.workload_id: w for w in batch}
    instances: dict[object, int] = {}
    commitment_gpus: dict[str, int] = {}
    budget_gpus, budget_usd = 0, D(0)
    for decision in result.placed:
        assert decision.placement is not None
        w, chosen = by_id[decision.workload_id], decision.placement.candidate
        if chosen.commitment is not None:
            cid = chosen.commitment.commitment_id
            commitment_gpus[cid] = commitment_gpus.get(cid, 0) + w.total_gpus
        else:
            assert chosen.offer is not None
            instances[chosen.offer.key] = instances.get(chosen.offer.key, 0) + w.nodes
        for quota in snap.quotas:
            used = sum(
                by_id[d.workload_id].total_gpus for d in result.placed if _covers(quota, d)
            )
            assert used <= quota.gpus_free
        if w.project == "p" and snap.budgets:
            budget_gpus += w.total_gpus
            budget_usd += decision.placement.cost.total_usd
    for key, taken in instances.items():
        free = snap.available.get(key)  # type: ignore[call-overload]
        assert free is None or taken <= free
    for c in snap.commitments:
        assert commitment_gpus.get(c.commitment_id, 0) <= c.gpus_free
    for budget in snap.budgets:
        if budget.max_gpus is not None:
            assert budget_gpus <= budget.max_gpus - budget.gpus_in_use
        if budget.usd_left is not None:
            assert budget_usd <= budget.usd_left
    assert all(_first_placed_alone_is_place(snap, by_id, result.decisions[:1]))


def _covers(quota: Quota, decision: PlacementDecision) -> bool:
    assert decision.placement is not None
    chosen = decision.placement.candidate
    return (
        quota.cloud.casefold() == chosen.cloud.casefold()
        and (quota.region is None or quota.region.casefold() == chosen.region.casefold())
        and (quota.capacity_type is None or quota.capacity_type is chosen.capacity_type)
    )


def _first_placed_alone_is_place(
    snap: PlacementSnapshot, by_id: dict[str, Workload], first: tuple[PlacementDecision, ...]
) -> list[bool]:
    """The first workload of a batch sees the untouched snapshot, so it gets what ``place`` gives."""
    return [place(by_id[d.workload_id], snap) == d for d in first]


def test_capacity_type_rank_is_total() -> None:
    assert {c for c in CapacityType} == {OD, SPOT, RESERVED}
