"""Cost accounting over any time window: what each instance and each commitment cost (reads the database).

INTERFACE STUB — being implemented; the signatures and field meanings below are the contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session


@dataclass(frozen=True, slots=True)
class CostLine:
    """What one instance, or one commitment, cost inside one time window.

    Instance lines: ``gpu_hours`` = ``used_gpu_hours`` = GPU-hours it ran inside the window;
    ``usd`` what it cost (per-second proration, spot price changes applied from their effective
    time); an instance on a commitment has ``usd`` 0 (its commitment line carries the charge);
    ``ondemand_usd`` is the same GPU-hours at the on-demand price of that instance type in that
    region (None when no on-demand price is known).
    Commitment lines: ``gpu_hours`` = GPU-hours committed inside the window; ``used_gpu_hours`` =
    GPU-hours its instances ran inside it; ``usd`` = the contract's charge for the window
    (committed GPU-hours x price, used or not); ``ondemand_usd`` = 0.
    Savings against on-demand = sum(ondemand_usd) - sum(usd) over all lines (with a known price).
    Idle commitment waste = (gpu_hours - used_gpu_hours) x price_per_gpu_hour of the commitment line.
    """

    kind: str  # "instance" | "commitment"
    org_id: str
    project_id: str | None
    workload_id: str | None
    instance_id: str | None
    commitment_id: str | None
    provider: str
    region: str
    capacity_type: str  # "spot" | "on-demand" | "reserved"
    accelerator: str
    instance_type: str | None
    gpu_hours: Decimal
    used_gpu_hours: Decimal
    usd: Decimal
    ondemand_usd: Decimal | None
    price_per_gpu_hour: Decimal  # the (last) effective price in the window, per GPU-hour


def cost_lines(session: Session, *, org_id: str, start: datetime, end: datetime) -> list[CostLine]:
    """Every instance and commitment of ``org_id`` that cost anything in ``[start, end)``."""
    raise NotImplementedError


def burn_rate(session: Session, *, org_id: str, now: datetime) -> Decimal:
    """Dollars per hour the org is paying at ``now``: running instances not on a commitment, plus
    the hourly charge of every active commitment."""
    raise NotImplementedError


__all__ = ["CostLine", "burn_rate", "cost_lines"]
