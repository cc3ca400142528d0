"""A workload as placement evaluates it against one snapshot: derived limits, factors, usage (pure: no I/O).

:class:`Usage` is what earlier placements of a batch have already taken on top of the
snapshot; :class:`Request` folds the workload, the snapshot and that usage into the figures
every filter and the cost model read, computed once per decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from broker.core.placement.cost import CostTerms, Location, egress_usd, slack_microseconds
from broker.core.placement.snapshot import OfferKey, PlacementSnapshot
from broker.core.types import CapacityType
from broker.core.workload import Budget, Commitment, Quota, Workload

_ZERO = Decimal(0)
_NOTHING: Mapping[object, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Usage:
    """Capacity, quota and budget taken since the snapshot (by earlier placements of a batch).

    ``quota_gpus`` is keyed by the quota's position in ``snapshot.quotas``.
    """

    instances: Mapping[OfferKey, int] = field(default_factory=lambda: _NOTHING)
    commitment_gpus: Mapping[str, int] = field(default_factory=lambda: _NOTHING)
    quota_gpus: Mapping[int, int] = field(default_factory=lambda: _NOTHING)
    budget_gpus: Mapping[str, int] = field(default_factory=lambda: _NOTHING)
    budget_usd: Mapping[str, Decimal] = field(default_factory=lambda: _NOTHING)


NO_USAGE = Usage()


class Request:
    """The per-decision view of a workload: what filters compare against, computed once."""

    __slots__ = (
        "_moves",
        "_quota_verdicts",
        "allowed_clouds",
        "allowed_regions",
        "budget",
        "budget_gpus_left",
        "budget_usd_left",
        "denied_clouds",
        "denied_regions",
        "gpu_rank",
        "origin",
        "slack_us",
        "snapshot",
        "terms",
        "total_gpus",
        "usage",
        "workload",
    )

    def __init__(
        self,
        workload: Workload,
        snapshot: PlacementSnapshot,
        usage: Usage = NO_USAGE,
        origin: Location | None = None,
    ) -> None:
        self.workload = workload
        self.snapshot = snapshot
        self.usage = usage
        self.origin = origin
        self.terms = CostTerms.of(workload)
        rank: dict[str, int] = {}
        for i, gpu in enumerate(workload.gpu_types):
            rank.setdefault(gpu.casefold(), i)
        self.gpu_rank = rank
        # Most workloads name no place: skip building four empty sets on the fast path.
        empty: frozenset[str] = frozenset()
        self.allowed_clouds = _folded(workload.allowed_clouds) if workload.allowed_clouds else empty
        self.denied_clouds = _folded(workload.denied_clouds) if workload.denied_clouds else empty
        self.allowed_regions = _folded(workload.allowed_regions) if workload.allowed_regions else empty
        self.denied_regions = _folded(workload.denied_regions) if workload.denied_regions else empty
        deadline = workload.deadline
        self.slack_us = None if deadline is None else slack_microseconds(snapshot.now, deadline)
        self.total_gpus = workload.total_gpus
        budget = snapshot.index.budgets.get(workload.project) if workload.project is not None else None
        self.budget: Budget | None = budget
        self.budget_gpus_left: int | None = None
        self.budget_usd_left: Decimal | None = None
        if budget is not None:
            if budget.max_gpus is not None:
                taken = usage.budget_gpus.get(budget.project, 0)
                self.budget_gpus_left = budget.max_gpus - budget.gpus_in_use - taken
            usd_left = budget.usd_left
            if usd_left is not None:
                self.budget_usd_left = usd_left - usage.budget_usd.get(budget.project, _ZERO)
        self._moves: dict[tuple[str, str, str | None], Decimal] = {}
        self._quota_verdicts: dict[tuple[str, str, CapacityType], str | None] = {}

    def free_instances(self, key: OfferKey) -> int | None:
        """Instances an offer can still start (None: unknown)."""
        free = self.snapshot.available.get(key)
        if free is None:
            return None
        return free - self.usage.instances.get(key, 0)

    def commitment_gpus_free(self, commitment: Commitment) -> int:
        return commitment.gpus_free - self.usage.commitment_gpus.get(commitment.commitment_id, 0)

    def quota_shortfall(self, cloud: str, region: str, capacity: CapacityType) -> str | None:
        """Why the quotas of a place cannot take this workload's GPUs, or None (casefolded names)."""
        key = (cloud, region, capacity)
        if key in self._quota_verdicts:
            return self._quota_verdicts[key]
        verdict = None
        for i, quota in self.snapshot.index.quotas.get(cloud, ()):
            if not quota_covers(quota, region, capacity):
                continue
            free = quota.gpus_free - self.usage.quota_gpus.get(i, 0)
            if free < self.total_gpus:
                scope = "/".join(p for p in (quota.cloud, quota.region, _value(quota.capacity_type)) if p)
                verdict = (
                    f"needs {self.total_gpus} GPUs, quota {scope} has {max(free, 0)} free of {quota.max_gpus}"
                )
                break
        self._quota_verdicts[key] = verdict
        return verdict

    def move_usd(self, cloud: str, region: str, zone: str | None) -> Decimal:
        """Dollars to bring the checkpoint from the origin (zero without one)."""
        origin = self.origin
        if origin is None or not self.workload.checkpoint_gb:
            return _ZERO
        key = (cloud, region, zone)
        cost = self._moves.get(key)
        if cost is None:
            cost = egress_usd(self.workload.checkpoint_gb, origin, cloud, region, zone, self.snapshot.egress)
            self._moves[key] = cost
        return cost

    def gpu_rank_of(self, accelerator: str) -> int:
        return self.gpu_rank.get(accelerator.casefold(), len(self.gpu_rank))


def quota_covers(quota: Quota, region: str, capacity: CapacityType) -> bool:
    """Whether a quota of the right cloud limits launches in ``region`` (casefolded) of ``capacity``."""
    return (quota.region is None or quota.region.casefold() == region) and (
        quota.capacity_type is None or quota.capacity_type is capacity
    )


def _folded(names: frozenset[str]) -> frozenset[str]:
    return frozenset(n.casefold() for n in names)


def _value(capacity: CapacityType | None) -> str | None:
    return capacity.value if capacity is not None else None


__all__ = ["NO_USAGE", "Request", "Usage", "quota_covers"]
