"""Workload-migration inputs: where a workload runs, its replacements, its history, the policy (pure: no I/O).

Everything here is a frozen dataclass validated at construction, so ``decide`` downstream can
stay total. Money is ``Decimal`` USD; every price is *marginal* and per instance-hour (0 for
capacity under a commitment that is already paid for); every time is timezone-aware.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from broker.core.checks import check_amount, check_aware
from broker.core.types import CapacityType
from broker.core.workload import Workload

OfferKey = tuple[str, str, str, str, str]
"""(cloud, region, zone or "", instance_type, capacity type): the same identity as ``Offer.key``."""

_ZERO = Decimal(0)


def offer_key(
    cloud: str, region: str, zone: str | None, instance_type: str, capacity_type: CapacityType
) -> OfferKey:
    """The identity of an offer across price snapshots, built exactly as ``Offer.key`` builds it."""
    return (cloud, region, zone or "", instance_type, capacity_type.value)


def describe_key(key: OfferKey) -> str:
    """``aws/us-east-1/us-east-1a/p5.48xlarge/spot`` (an empty zone is left out)."""
    return "/".join(part for part in key if part)


class MoveKind(enum.StrEnum):
    """Why a workload moved: it had to, its deadline needed it, or it was worth the money."""

    FORCED = "forced"
    DEADLINE = "deadline"
    VOLUNTARY = "voluntary"


def _check_key(name: str, key: OfferKey) -> None:
    if len(key) != 5 or not all(isinstance(part, str) for part in key):
        raise ValueError(f"{name} must be a 5-tuple of strings like Offer.key, got {key!r}")


@dataclass(frozen=True, slots=True)
class Move:
    """One past move of the workload, kept so hysteresis can refuse to move straight back."""

    from_key: OfferKey
    to_key: OfferKey
    at: datetime
    kind: MoveKind

    def __post_init__(self) -> None:
        _check_key("from_key", self.from_key)
        _check_key("to_key", self.to_key)
        check_aware("at", self.at)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A launch of ``offer_key`` that the provider refused for capacity: back off from it for a while."""

    offer_key: OfferKey
    at: datetime

    def __post_init__(self) -> None:
        _check_key("offer_key", self.offer_key)
        check_aware("at", self.at)


@dataclass(frozen=True, slots=True)
class RunningWorkload:
    """A workload where it runs now, how far it got, and what the engine needs to remember.

    ``price_per_hour`` is the marginal price of one of its instances (0 under a commitment).
    ``instance_ids`` are ours, one per node. ``started_at`` is when it landed on the current
    offer (the dwell clock). ``progress_hours`` of ``workload.expected_hours`` are done;
    ``progress_rate`` is progress hours per wall-clock hour here (1 = on schedule; the caller
    measures it). ``generation`` counts committed migration plans and goes into every
    idempotency key. ``moves`` and ``refusals`` are recent history: moves older than the
    policy's cooldown and refusals older than its backoff are ignored, so the caller may drop
    them. ``reclaim_at`` records a preemption notice received, ``lost_at`` a preemption: with
    either set the workload must move whatever event comes next (a refused launch, typically).

    The caller asks for a decision only while no migration plan is in flight for the workload;
    a ``LaunchRefused`` ends the plan in flight.
    """

    workload: Workload
    cloud: str
    region: str
    zone: str | None
    instance_type: str
    capacity_type: CapacityType
    price_per_hour: Decimal
    instance_ids: tuple[str, ...]
    started_at: datetime
    progress_hours: Decimal = _ZERO
    last_checkpoint_at: datetime | None = None
    generation: int = 0
    commitment_id: str | None = None
    progress_rate: Decimal = Decimal(1)
    moves: tuple[Move, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    reclaim_at: datetime | None = None
    lost_at: datetime | None = None

    def __post_init__(self) -> None:
        check_amount("price_per_hour", self.price_per_hour)
        check_amount("progress_hours", self.progress_hours)
        check_amount("progress_rate", self.progress_rate)
        if len(self.instance_ids) != self.workload.nodes:
            raise ValueError(
                f"a workload of {self.workload.nodes} nodes needs {self.workload.nodes} instance ids, "
                f"got {len(self.instance_ids)}"
            )
        if len(set(self.instance_ids)) != len(self.instance_ids) or not all(self.instance_ids):
            raise ValueError("instance_ids must be distinct and non-empty")
        if self.generation < 0:
            raise ValueError(f"generation must be non-negative, got {self.generation}")
        for name in ("started_at", "last_checkpoint_at", "reclaim_at", "lost_at"):
            check_aware(name, getattr(self, name))

    @property
    def workload_id(self) -> str:
        return self.workload.workload_id

    @property
    def key(self) -> OfferKey:
        return offer_key(self.cloud, self.region, self.zone, self.instance_type, self.capacity_type)

    @property
    def remaining_hours(self) -> Decimal:
        """Expected hours of work left (never negative: a run past its estimate has 0 left)."""
        return max(_ZERO, self.workload.expected_hours - self.progress_hours)


@dataclass(frozen=True, slots=True)
class Replacement:
    """One place the workload could move to, computed by the caller (with the placement engine).

    ``price_per_hour`` is marginal per instance-hour (0 under a commitment with room);
    ``egress_per_gb`` prices moving the checkpoint from where the workload runs now to here;
    ``meets_deadline`` is the caller's projection (True for a workload without a deadline).
    """

    cloud: str
    region: str
    zone: str | None
    instance_type: str
    capacity_type: CapacityType
    price_per_hour: Decimal
    commitment_id: str | None = None
    egress_per_gb: Decimal = _ZERO
    meets_deadline: bool = True

    def __post_init__(self) -> None:
        check_amount("price_per_hour", self.price_per_hour)
        check_amount("egress_per_gb", self.egress_per_gb)
        if not self.cloud or not self.region or not self.instance_type:
            raise ValueError("a replacement needs a cloud, a region and an instance type")

    @property
    def key(self) -> OfferKey:
        return offer_key(self.cloud, self.region, self.zone, self.instance_type, self.capacity_type)

    def describe(self) -> str:
        under = f" under {self.commitment_id}" if self.commitment_id else ""
        return describe_key(self.key) + under


@dataclass(frozen=True, slots=True)
class MigrationPolicy:
    """The engine's tunables. Defaults are conservative: a move must clearly pay for itself.

    * ``min_dwell`` (1 h): no voluntary move before the workload has run this long where it is;
      a fresh instance has just paid its restart, and prices seen minutes ago are noise.
    * ``min_saving_usd`` ($1) and ``min_saving_fraction`` (20 %): a voluntary move needs
      ``saving > move cost × (1 + fraction) + usd``; the margin absorbs estimate error
      (remaining hours, checkpoint size) so near-ties never move.
    * ``move_back_cooldown`` (6 h): no move *to* an offer the workload left this recently
      (whatever the reason it left); this is what makes A→B→A flapping impossible.
    * ``checkpoint_wait_timeout`` (15 min): the longest a move waits for a checkpoint before
      cutting over (a preemption notice bounds it further by the reclaim time); 0 leaves the
      WaitForCheckpoint out and prices the progress lost by cutting over without one.
    * ``launch_refused_backoff`` (30 min): an offer refused for capacity is not tried again
      for this long.
    * ``deadline_buffer`` (1 h): on spot, slack below this plus one preemption's cost puts the
      deadline at risk.
    """

    min_dwell: timedelta = timedelta(hours=1)
    min_saving_usd: Decimal = Decimal("1.00")
    min_saving_fraction: Decimal = Decimal("0.20")
    move_back_cooldown: timedelta = timedelta(hours=6)
    checkpoint_wait_timeout: timedelta = timedelta(minutes=15)
    launch_refused_backoff: timedelta = timedelta(minutes=30)
    deadline_buffer: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        check_amount("min_saving_usd", self.min_saving_usd)
        check_amount("min_saving_fraction", self.min_saving_fraction)
        for name in (
            "min_dwell",
            "move_back_cooldown",
            "checkpoint_wait_timeout",
            "launch_refused_backoff",
            "deadline_buffer",
        ):
            if getattr(self, name) < timedelta(0):
                raise ValueError(f"{name} must not be negative")


__all__ = [
    "MigrationPolicy",
    "Move",
    "MoveKind",
    "OfferKey",
    "Refusal",
    "Replacement",
    "RunningWorkload",
    "describe_key",
    "offer_key",
]
