"""What placement answers: candidates, the chosen placement or a wait, and the explanation (pure: no I/O).

Everything here is a frozen dataclass of plain values, so an API can serialise a decision
and its explanation as they are.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from broker.core.commands import Launch, command_key
from broker.core.placement.cost import CostBreakdown
from broker.core.placement.snapshot import CAPACITY_RANK
from broker.core.types import CapacityType, Offer
from broker.core.workload import Commitment
from pricing.core import ranking_key


@dataclass(frozen=True, slots=True)
class Candidate:
    """One way to run a workload: an offer bought one way, or capacity under a commitment.

    For a commitment, ``offer`` is the instance shape it launches (None when the snapshot has
    no offer of that shape: such a candidate is rejected by the ``gpus-per-node`` filter).
    """

    capacity_type: CapacityType
    offer: Offer | None
    commitment: Commitment | None = None

    def __post_init__(self) -> None:
        if self.offer is None and self.commitment is None:
            raise ValueError("a candidate needs an offer or a commitment")
        if self.commitment is not None and self.capacity_type is not CapacityType.RESERVED:
            raise ValueError("capacity under a commitment is reserved capacity")

    @property
    def cloud(self) -> str:
        return self.commitment.cloud if self.commitment else self._offer.cloud

    @property
    def region(self) -> str:
        return self.commitment.region if self.commitment else self._offer.region

    @property
    def zone(self) -> str | None:
        if self.commitment is not None and self.commitment.zone is not None:
            return self.commitment.zone
        return self.offer.zone if self.offer is not None else None

    @property
    def instance_type(self) -> str | None:
        if self.offer is not None:
            return self.offer.instance_type
        return self.commitment.instance_type if self.commitment else None

    @property
    def accelerator(self) -> str:
        return self.commitment.accelerator if self.commitment else self._offer.accelerator

    @property
    def label(self) -> str:
        """A short human name: ``aws/us-east-1/use1-az1 p5.48xlarge spot`` or ``commitment c1 (...)``."""
        where = "/".join(p for p in (self.cloud, self.region, self.zone) if p)
        what = f"{where} {self.instance_type or '?'}"
        if self.commitment is not None:
            return f"commitment {self.commitment.commitment_id} ({what})"
        return f"{what} {self.capacity_type.value}"

    @property
    def _offer(self) -> Offer:
        assert self.offer is not None  # a candidate always has an offer or a commitment
        return self.offer


def order_key(candidate: Candidate, total_usd: Decimal, gpu_rank: int) -> tuple[object, ...]:
    """The total order candidates are ranked by: cheapest expected total first.

    Ties go to the user's preferred GPU type, then to safer capacity (reserved, on-demand,
    spot), then to commitments before offers; among commitments the one that ends first
    (use it or lose it), then its id; among offers ``pricing.core.ranking_key``. Offers equal
    even on that keep their catalog order (both search paths sort stably).
    """
    head = (total_usd, gpu_rank, CAPACITY_RANK[candidate.capacity_type])
    if candidate.commitment is not None:
        return (*head, 0, candidate.commitment.ends_at, candidate.commitment.commitment_id)
    return (*head, 1, *ranking_key(candidate._offer))


@dataclass(frozen=True, slots=True)
class Placement:
    """The chosen candidate for a workload, with its expected cost."""

    workload_id: str
    candidate: Candidate
    cost: CostBreakdown
    nodes: int
    gpus_per_node: int

    @property
    def capacity_type(self) -> CapacityType:
        return self.candidate.capacity_type

    def launch(self, max_price_per_gpu_hour: Decimal | None = None) -> Launch:
        """The command that carries this placement out (its key is derived from the placement).

        Under a commitment the price is the contract's (already paid, shown for the record);
        ``max_price_per_gpu_hour`` becomes a spot launch's bid cap per instance.
        """
        candidate = self.candidate
        commitment = candidate.commitment
        if commitment is not None:
            price = commitment.price_per_gpu_hour * self.gpus_per_node
        else:
            price = candidate._offer.price_per_hour
        instance_type = candidate.instance_type or ""
        parts = (candidate.cloud, candidate.region, candidate.zone, instance_type, candidate.capacity_type)
        commitment_id = commitment.commitment_id if commitment else None
        cap = None
        if max_price_per_gpu_hour is not None and candidate.capacity_type is CapacityType.SPOT:
            cap = max_price_per_gpu_hour * self.gpus_per_node
        return Launch(
            idempotency_key=command_key("launch", self.workload_id, *parts, self.nodes, commitment_id),
            workload_id=self.workload_id,
            cloud=candidate.cloud,
            region=candidate.region,
            zone=candidate.zone,
            instance_type=instance_type,
            capacity_type=candidate.capacity_type,
            count=self.nodes,
            price_per_hour=price,
            commitment_id=commitment_id,
            max_price_per_hour=cap,
        )


@dataclass(frozen=True, slots=True)
class Rejection:
    """A candidate a filter turned down: which filter, and why (the reason names the numbers)."""

    candidate: Candidate
    filter: str
    reason: str


@dataclass(frozen=True, slots=True)
class Scored:
    """A candidate that passed every filter, with its expected cost."""

    candidate: Candidate
    cost: CostBreakdown


@dataclass(frozen=True, slots=True)
class Explanation:
    """Every candidate considered: scored ones best first (the first won), then each rejection."""

    scored: tuple[Scored, ...]
    rejected: tuple[Rejection, ...]

    def rejections_by_filter(self) -> tuple[tuple[str, int], ...]:
        """How many candidates each filter turned down, most first (ties by filter name)."""
        counts = Counter(r.filter for r in self.rejected)
        return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


@dataclass(frozen=True, slots=True)
class PlacementDecision:
    """Where to run a workload, or why to wait; with the full explanation when one was asked for."""

    workload_id: str
    placement: Placement | None
    wait_reason: str | None = None
    explanation: Explanation | None = None

    @property
    def waits(self) -> bool:
        return self.placement is None


__all__ = [
    "Candidate",
    "Explanation",
    "Placement",
    "PlacementDecision",
    "Rejection",
    "Scored",
    "order_key",
]
