"""The provider interface the core defines and every adapter implements (pure: no I/O here).

Small on purpose (Karpenter's CloudProvider is the model): list offers, launch, get, list,
terminate, check, plus capabilities declared as data. Idempotency is part of the contract:

* ``launch`` is keyed by our ``instance_id``: the adapter passes a client token or a
  deterministic name derived from it, and looks for an existing instance first where the API
  has no token, so a retry after a timeout returns the first instance instead of making a second.
* ``terminate`` of an instance that does not exist (any more) returns normally: NotFound is done.

Every method raises only :mod:`broker.core.errors` types.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

from broker.core.types import CapacityType, Offer

# Our instance ids become cloud names and labels: GCP's name rule ([a-z][-a-z0-9]*, <= 63 with
# our "gpubroker-" prefix) is the strictest of the clouds we speak to.
INSTANCE_ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]{2,40}[a-z0-9]$")
NAME_PREFIX = "gpubroker-"
TAG_MANAGED = "gpubroker-managed"
TAG_INSTANCE_ID = "gpubroker-instance-id"


class InstanceState(enum.StrEnum):
    """Our instance states; each adapter maps its provider's states here in one visible table."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    PREEMPTED = "preempted"
    FAILED = "failed"
    UNKNOWN = "unknown"


TERMINAL_STATES = frozenset({InstanceState.TERMINATED, InstanceState.PREEMPTED, InstanceState.FAILED})


class LaunchIdempotency(enum.StrEnum):
    """How a provider makes launch retries safe."""

    CLIENT_TOKEN = "client-token"  # the API dedupes on a token (AWS ClientToken, GCP requestId)
    UNIQUE_NAME = "unique-name"  # the API refuses a second resource with the same name (GCP, Azure)
    LOOKUP_FIRST = "lookup-first"  # no API support: the adapter finds an existing one by name first


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider can do, as data: the core plans with it instead of catching NotImplementedError."""

    capacity_types: frozenset[CapacityType]
    reservations: bool
    interruption_notice_seconds: int | None  # None: no advance notice of preemption
    availability_signal: bool  # does list_offers say whether capacity exists right now?
    live_prices: bool  # prices from the provider's API (False: from a static table)
    launch_idempotency: LaunchIdempotency
    regions: tuple[str, ...] = ()  # regions this adapter is configured for (empty: any it lists)

    @property
    def spot(self) -> bool:
        return CapacityType.SPOT in self.capacity_types


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """Everything needed to start one instance. ``instance_id`` is ours and the idempotency key."""

    instance_id: str
    instance_type: str
    region: str
    capacity_type: CapacityType
    zone: str | None = None
    reservation_id: str | None = None
    max_price_per_hour: Decimal | None = None  # spot bid where the market takes one (Vast, RunPod)
    image: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    ssh_public_key: str | None = None

    def __post_init__(self) -> None:
        if not INSTANCE_ID_PATTERN.match(self.instance_id):
            raise ValueError(
                f"instance_id {self.instance_id!r} must be 4-42 characters of a-z, 0-9 and '-', "
                "starting with a letter"
            )
        if self.capacity_type is CapacityType.RESERVED and not self.reservation_id:
            raise ValueError("a reserved launch needs the reservation_id to launch into")
        if self.max_price_per_hour is not None and self.max_price_per_hour <= 0:
            raise ValueError("max_price_per_hour must be positive")

    @property
    def name(self) -> str:
        """The deterministic provider-side name: the same request always gets the same name."""
        return NAME_PREFIX + self.instance_id


@dataclass(frozen=True, slots=True)
class Instance:
    """An instance as the provider reports it, mapped to our vocabulary."""

    provider: str
    instance_id: str  # ours (from the tag/label/name)
    provider_instance_id: str
    instance_type: str
    region: str
    zone: str | None
    capacity_type: CapacityType
    state: InstanceState
    launched_at: datetime | None = None
    state_reason: str | None = None  # the provider's reason, e.g. Server.SpotInstanceTermination
    price_per_hour: Decimal | None = None
    public_ip: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """The answer of ``check()``: are the credentials good and does the API answer?"""

    provider: str
    configured: bool
    reachable: bool
    detail: str = ""


@runtime_checkable
class Provider(Protocol):
    """One cloud or marketplace. Implementations live in ``providers/``, one module each."""

    name: str
    capabilities: Capabilities

    def list_offers(self, *, regions: Sequence[str] | None = None) -> list[Offer]:
        """GPU offers with prices (and availability where the API says), observed now."""
        ...

    def launch(self, request: LaunchRequest) -> Instance:
        """Start an instance, idempotently by ``request.instance_id``."""
        ...

    def get_instance(self, instance_id: str, *, region: str) -> Instance | None:
        """Our instance by our id (tag/label/name), or None when the provider has none."""
        ...

    def list_instances(self, *, regions: Sequence[str] | None = None) -> list[Instance]:
        """Every instance we own (found by our tags/labels/names), for reconciliation."""
        ...

    def terminate(self, instance_id: str, *, region: str) -> None:
        """Terminate our instance; returns normally when it is already gone."""
        ...

    def check(self) -> ProviderStatus:
        """A cheap authenticated call: are we configured, and does the API answer?"""
        ...


def owned_instance_id(name: str | None) -> str | None:
    """Our instance id from a provider-side name, or None when the name is not ours."""
    if name and name.startswith(NAME_PREFIX):
        candidate = name[len(NAME_PREFIX) :]
        if INSTANCE_ID_PATTERN.match(candidate):
            return candidate
    return None


__all__ = [
    "INSTANCE_ID_PATTERN",
    "NAME_PREFIX",
    "TAG_INSTANCE_ID",
    "TAG_MANAGED",
    "TERMINAL_STATES",
    "Capabilities",
    "Instance",
    "InstanceState",
    "LaunchIdempotency",
    "LaunchRequest",
    "Provider",
    "ProviderStatus",
    "owned_instance_id",
]
