"""The events the workload-migration engine reacts to, as frozen data (pure: no I/O)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from broker.core.checks import check_amount, check_aware
from broker.core.migration.model import OfferKey


class Trigger(enum.StrEnum):
    """Which kind of event a decision answers."""

    PREEMPTION_NOTICE = "preemption-notice"
    PREEMPTED = "preempted"
    LAUNCH_REFUSED = "launch-refused"
    PRICE_CHANGED = "price-changed"
    COMMITMENT_FREED = "commitment-freed"
    DEADLINE_AT_RISK = "deadline-at-risk"
    REBALANCE = "rebalance"


def _check_key(key: OfferKey) -> None:
    if len(key) != 5 or not all(isinstance(part, str) for part in key):
        raise ValueError(f"offer_key must be a 5-tuple of strings like Offer.key, got {key!r}")


@dataclass(frozen=True, slots=True)
class PreemptionNotice:
    """The provider will reclaim ``instance_id`` at ``reclaim_at`` (AWS gives 2 minutes, GCP 30 s)."""

    instance_id: str
    at: datetime
    reclaim_at: datetime

    def __post_init__(self) -> None:
        check_aware("at", self.at)
        check_aware("reclaim_at", self.reclaim_at)

    @property
    def trigger(self) -> Trigger:
        return Trigger.PREEMPTION_NOTICE


@dataclass(frozen=True, slots=True)
class Preempted:
    """``instance_id`` is gone (reclaimed without notice, or the notice ran out)."""

    instance_id: str
    at: datetime

    def __post_init__(self) -> None:
        check_aware("at", self.at)

    @property
    def trigger(self) -> Trigger:
        return Trigger.PREEMPTED


@dataclass(frozen=True, slots=True)
class LaunchRefused:
    """The launch under ``launch_key`` of ``offer_key`` was refused (``reason``: capacity, quota)."""

    launch_key: str
    offer_key: OfferKey
    at: datetime
    reason: str = "capacity"

    def __post_init__(self) -> None:
        _check_key(self.offer_key)
        check_aware("at", self.at)
        if not self.launch_key:
            raise ValueError("launch_key must not be empty")

    @property
    def trigger(self) -> Trigger:
        return Trigger.LAUNCH_REFUSED


@dataclass(frozen=True, slots=True)
class PriceChanged:
    """The price per instance-hour of ``offer_key`` moved from ``old_price`` to ``new_price``."""

    offer_key: OfferKey
    old_price: Decimal
    new_price: Decimal
    at: datetime

    def __post_init__(self) -> None:
        _check_key(self.offer_key)
        check_aware("at", self.at)
        check_amount("old_price", self.old_price)
        check_amount("new_price", self.new_price)

    @property
    def trigger(self) -> Trigger:
        return Trigger.PRICE_CHANGED


@dataclass(frozen=True, slots=True)
class CommitmentFreed:
    """``gpus_free`` GPUs of ``commitment_id`` are paid for and idle."""

    commitment_id: str
    gpus_free: int
    at: datetime

    def __post_init__(self) -> None:
        check_aware("at", self.at)
        if self.gpus_free < 0:
            raise ValueError(f"gpus_free must be non-negative, got {self.gpus_free}")

    @property
    def trigger(self) -> Trigger:
        return Trigger.COMMITMENT_FREED


@dataclass(frozen=True, slots=True)
class DeadlineAtRisk:
    """The caller judged the deadline at risk (``deadline_at_risk`` is the engine's own test)."""

    at: datetime
    detail: str = ""

    def __post_init__(self) -> None:
        check_aware("at", self.at)

    @property
    def trigger(self) -> Trigger:
        return Trigger.DEADLINE_AT_RISK


@dataclass(frozen=True, slots=True)
class Rebalance:
    """A periodic look for an offer cheaper by more than the cost of moving."""

    at: datetime

    def __post_init__(self) -> None:
        check_aware("at", self.at)

    @property
    def trigger(self) -> Trigger:
        return Trigger.REBALANCE


MigrationEvent = (
    PreemptionNotice | Preempted | LaunchRefused | PriceChanged | CommitmentFreed | DeadlineAtRisk | Rebalance
)

__all__ = [
    "CommitmentFreed",
    "DeadlineAtRisk",
    "LaunchRefused",
    "MigrationEvent",
    "Preempted",
    "PreemptionNotice",
    "PriceChanged",
    "Rebalance",
    "Trigger",
]
