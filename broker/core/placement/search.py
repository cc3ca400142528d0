"""The fast placement path: walk the snapshot's price-sorted index and stop early (pure: no I/O).

It finds the same candidate as :func:`broker.core.placement.explain.explain_request` (a
property test holds it to that) without looking at every offer:

* only the index groups of the workload's GPU types with ``gpus_per_node`` GPUs per instance
  are read; stale, unavailable and catalog-reserved offers are not in the index at all;
* each group is sorted by price and a candidate's expected cost is at least
  ``price × (run factor) + price × (smallest spot rate in the group × risk factor)``, so a
  scan stops at the first offer whose bound exceeds the best total found, the budget left,
  or the price limit;
* workload-wide verdicts (GPU budget, a deadline even on-demand cannot meet, the spot
  safety rule) are settled once instead of per candidate;
* a workload with a region or cloud allow-list walks only those places' lists.

Commitments are few, so they go through the real filter functions (those that can turn a
commitment down). Offer checks are inlined here for speed and mirror the filters in
:mod:`broker.core.placement.filters`.
"""

from __future__ import annotations

from decimal import Decimal

from broker.core.placement.cost import (
    CostBreakdown,
    hours_in_microseconds,
    offer_cost,
    offer_total,
    spot_wall_hours,
)
from broker.core.placement.decision import Candidate, order_key
from broker.core.placement.explain import candidate_cost
from broker.core.placement.filters import COMMITMENT_FILTERS, hours
from broker.core.placement.request import Request
from broker.core.placement.snapshot import IndexedOffer, ShapeGroup
from broker.core.types import CapacityType, Offer
from broker.core.workload import CapacityPreference

_ZERO = Decimal(0)
_HOUR_US = Decimal(3_600_000_000)


class _Best:
    """The best candidate so far; offers stay unwrapped until a tie or the end needs them."""

    __slots__ = ("candidate", "commitment", "limited", "move", "offer", "rank", "rate", "total")

    def __init__(self) -> None:
        self.total: Decimal | None = None
        self.rank = 0
        self.offer: Offer | None = None
        self.candidate: Candidate | None = None
        self.commitment = False  # a commitment is priced by ``candidate_cost`` at the end
        self.rate: Decimal | None = None
        self.limited = False
        self.move = _ZERO

    def get(self) -> Candidate:
        if self.candidate is None:
            assert self.offer is not None
            self.candidate = Candidate(self.offer.capacity_type, self.offer)
        return self.candidate

    def offer_wins(
        self, total: Decimal, rank: int, offer: Offer, rate: Decimal | None, limited: bool, move: Decimal
    ) -> None:
        best = self.total
        if best is not None and (total > best or (total == best and not self._beats(total, rank, offer))):
            return
        self.total, self.rank, self.offer, self.candidate, self.commitment = total, rank, offer, None, False
        self.rate, self.limited, self.move = rate, limited, move

    def consider(self, total: Decimal, rank: int, candidate: Candidate) -> None:
        best = self.total
        if best is None or total < best or (
            total == best and order_key(candidate, total, rank) < order_key(self.get(), best, self.rank)
        ):
            self.total, self.rank, self.offer, self.candidate = total, rank, candidate.offer, candidate
            self.commitment = True

    def found(self, request: Request) -> tuple[Candidate, CostBreakdown]:
        candidate = self.get()
        if self.commitment:
            return candidate, candidate_cost(request, candidate)
        assert self.offer is not None
        terms, now = request.terms, request.snapshot.now
        price = self.offer.price_per_hour
        return candidate, offer_cost(terms, price, self.rate, self.limited, self.move, now)

    def _beats(self, total: Decimal, rank: int, offer: Offer) -> bool:
        assert self.total is not None
        challenger = Candidate(offer.capacity_type, offer)
        return order_key(challenger, total, rank) < order_key(self.get(), self.total, self.rank)


class _Tally:
    """Why offers were passed over, counted cheaply, for the wait reason."""

    __slots__ = ("budget", "capacity", "deadline", "examined", "place", "price", "quota")

    def __init__(self) -> None:
        self.examined = self.place = self.capacity = self.quota = 0
        self.budget = self.deadline = self.price = 0

    def summary(self) -> str:
        parts = [
            ("cloud or region", self.place),
            ("capacity", self.capacity),
            ("quota", self.quota),
            ("budget", self.budget),
            ("deadline", self.deadline),
            ("price limit", self.price),
        ]
        named = ", ".join(f"{name} {n}" for name, n in parts if n)
        return f" ({named})" if named else ""


def search(request: Request) -> tuple[Candidate, CostBreakdown] | str:
    """The winning candidate and its cost, or the reason to wait."""
    workload = request.workload
    terms = request.terms
    slack = request.slack_us
    if request.budget_gpus_left is not None and request.budget_gpus_left < request.total_gpus:
        assert request.budget is not None
        return (
            f"wait: needs {request.total_gpus} GPUs, project {request.budget.project} has "
            f"{max(request.budget_gpus_left, 0)} left of its {request.budget.max_gpus}"
        )
    # Every non-spot run takes R + H, and spot never less: if that misses, everything does.
    if slack is not None and hours_in_microseconds(terms.wall_hours) > slack:
        return (
            f"wait: the run needs {hours(terms.wall_hours)}, "
            f"{hours(Decimal(slack) / _HOUR_US)} left before the deadline"
        )
    best = _Best()
    tally = _Tally()
    preference = workload.capacity
    auto = preference is CapacityPreference.AUTO
    if auto or preference is CapacityPreference.RESERVED:
        _commitments(request, best, tally)
    if auto or preference is CapacityPreference.ON_DEMAND:
        _offers(request, best, tally, CapacityType.ON_DEMAND, spot_deadline=False)
    fallback_exists = best.total is not None
    if workload.interruptible and (auto or preference is CapacityPreference.SPOT):
        # The spot safety rule, settled once: with a fallback to protect and no room for a
        # worst-case preemption, no spot offer may win, so none is looked at.
        unsafe = (
            slack is not None
            and fallback_exists
            and hours_in_microseconds(terms.worst_fallback_hours) > slack
        )
        if not unsafe:
            _offers(request, best, tally, CapacityType.SPOT, spot_deadline=slack is not None)
    if best.total is None:
        shapes = "/".join(workload.gpu_types)
        return (
            f"wait: none of the {tally.examined} usable {shapes} offers with {workload.gpus_per_node} GPUs "
            f"per instance or commitments passed the filters{tally.summary()}; "
            "explain() lists every rejection"
        )
    return best.found(request)


def _commitments(request: Request, best: _Best, tally: _Tally) -> None:
    index = request.snapshot.index
    gpus_per_node = request.workload.gpus_per_node
    usd_left = request.budget_usd_left
    taken = request.usage.commitment_gpus
    for accelerator, rank in request.gpu_rank.items():
        for commitment, shapes in index.commitments.get(accelerator, ()):
            tally.examined += 1
            shape = shapes.get(gpus_per_node)
            # The two commonest refusals first, before building a candidate (same verdicts as
            # the gpus-per-node and capacity filters, which run again below).
            if shape is None:
                continue
            if commitment.gpus_free - taken.get(commitment.commitment_id, 0) < request.total_gpus:
                tally.capacity += 1
                continue
            candidate = Candidate(CapacityType.RESERVED, shape, commitment)
            if not _passes(request, candidate):
                continue
            # Paid for: the marginal cost is the move alone (what ``commitment_cost`` totals).
            total = request.move_usd(candidate.cloud, candidate.region, candidate.zone)
            if usd_left is not None and total > usd_left:
                tally.budget += 1
                continue
            best.consider(total, rank, candidate)


def _passes(request: Request, candidate: Candidate) -> bool:
    return all(f.check(request, candidate) is None for f in COMMITMENT_FILTERS)


def _walks(request: Request, group: ShapeGroup) -> tuple[tuple[IndexedOffer, ...], ...]:
    """The sorted lists to walk: only the allowed regions' or clouds' when the workload names some."""
    if request.allowed_regions:
        return tuple(group.by_region[r] for r in sorted(request.allowed_regions) if r in group.by_region)
    if request.allowed_clouds:
        return tuple(group.by_cloud[c] for c in sorted(request.allowed_clouds) if c in group.by_cloud)
    return (group.offers,)


def _offers(
    request: Request, best: _Best, tally: _Tally, capacity: CapacityType, *, spot_deadline: bool
) -> None:
    """Walk the index lists of one capacity type, cheapest first, until nothing there can win.

    Each list is walked on its own and stops by itself, so the order of the lists does not
    change the winner (ties are settled by the total order, not by who came first).
    """
    workload = request.workload
    snapshot = request.snapshot
    index = snapshot.index
    terms = request.terms
    run_factor = terms.run_factor
    nodes = workload.nodes
    gpus_per_node = workload.gpus_per_node
    limit = workload.max_price_per_gpu_hour
    max_price = None if limit is None else limit * gpus_per_node
    usd_left = request.budget_usd_left
    slack = request.slack_us if spot_deadline else None
    allowed_clouds, denied_clouds = request.allowed_clouds, request.denied_clouds
    allowed_regions, denied_regions = request.allowed_regions, request.denied_regions
    available = snapshot.available
    taken = request.usage.instances
    quotas = index.quotas
    moving = request.origin is not None and bool(workload.checkpoint_gb)
    narrowed = bool(allowed_regions or allowed_clouds)
    for accelerator, rank in request.gpu_rank.items():
        group = index.usable.get((accelerator, gpus_per_node, capacity))
        if group is None:
            continue
        risk_min = None if group.min_rate is None else group.min_rate * terms.risk_factor
        for entries in _walks(request, group) if narrowed else (group.offers,):
            for price, key, offer, cloud, region, rate, limited in entries:
                if max_price is not None and price > max_price:
                    tally.price += 1
                    break
                bound = price * run_factor
                if risk_min is not None:
                    bound = bound + price * risk_min
                if best.total is not None and bound > best.total:
                    break
                if usd_left is not None and bound > usd_left:
                    tally.budget += 1
                    break
                tally.examined += 1
                if (denied_clouds and cloud in denied_clouds) or (
                    allowed_clouds and cloud not in allowed_clouds
                ):
                    tally.place += 1
                    continue
                if (denied_regions and region in denied_regions) or (
                    allowed_regions and region not in allowed_regions
                ):
                    tally.place += 1
                    continue
                free = available.get(key) if available else None
                if free is not None and free - taken.get(key, 0) < nodes:
                    tally.capacity += 1
                    continue
                if cloud in quotas and request.quota_shortfall(cloud, region, capacity) is not None:
                    tally.quota += 1
                    continue
                move = request.move_usd(offer.cloud, offer.region, offer.zone) if moving else _ZERO
                total = offer_total(terms, price, rate, limited, move)
                if usd_left is not None and total > usd_left:
                    tally.budget += 1
                    continue
                if (
                    slack is not None
                    and rate is not None
                    and hours_in_microseconds(spot_wall_hours(terms, rate)) > slack
                ):
                    tally.deadline += 1
                    continue
                best.offer_wins(total, rank, offer, rate, limited, move)


__all__ = ["search"]
