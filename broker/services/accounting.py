"""Accounting: roll instance run time up into per-UTC-day cost records (does I/O).

A cost record is one instance's GPU-hours, dollars and on-demand counterfactual on one UTC day,
recomputed from the fleet tables and the price history with exactly the math of
:mod:`broker.services.costs` (per-second proration, spot price changes from their observed time,
on-demand price of the time). The rollup is idempotent (an upsert of the recomputed values), so
running it twice, or on two replicas, or after a crash, gives the same records.

An instance on a commitment gets ``usd`` 0: the commitment is paid whether used or not, so its
charge is not the instance's. Commitment charges get **no** daily record: ``cost_record`` is keyed
by instance, and a contract's charge for any day is a fixed fact of the ``commitment`` row
(committed GPU-hours of the day × price), so a stored copy could only drift from it. Readers that
need it per day take it from :func:`broker.services.costs.cost_lines` (or the commitment usage
report), which derive it from the contract itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from broker.db.fleet import CostRecord
from broker.services.costs import FleetPrices, instance_line, instances_between
from pricing.costs import clip, utc_days


def rollup(session: Session, now: datetime, *, lookback: timedelta = timedelta(days=2)) -> int:
    """Recompute the cost records of every instance that ran since ``now - lookback`` (from that
    day's UTC midnight up to ``now``); returns the number of records written."""
    now = now.astimezone(UTC)
    since = datetime.combine((now - lookback).date(), datetime.min.time(), tzinfo=UTC)
    if now <= since:
        return 0
    instances = instances_between(session, None, since, now)
    prices = FleetPrices.load(session, instances, since, now)
    records: list[dict[str, Any]] = []
    for instance in instances:
        ran = clip(instance.launched_at, instance.ended_at or now, since, now)
        if ran is None:
            continue
        for day_start, day_end in utc_days(*ran):
            line = instance_line(instance, prices, day_start, day_end)
            if line is None:
                continue
            records.append(
                {
                    "instance_id": instance.id,
                    "day": day_start.date(),
                    "org_id": instance.org_id,
                    "project_id": instance.project_id,
                    "workload_id": instance.workload_id,
                    "provider": instance.provider,
                    "region": instance.region,
                    "capacity_type": instance.capacity_type,
                    "commitment_id": instance.commitment_id,
                    "accelerator": instance.accelerator,
                    "instance_type": instance.instance_type,
                    "gpu_hours": line.gpu_hours,
                    "usd": line.usd,
                    "ondemand_usd": line.ondemand_usd,
                    "updated_at": now,
                }
            )
    if records:
        statement = insert(CostRecord.__table__)
        recomputed = statement.excluded
        upsert = statement.on_conflict_do_update(
            index_elements=[CostRecord.instance_id, CostRecord.day],
            set_={
                "gpu_hours": recomputed.gpu_hours,
                "usd": recomputed.usd,
                "ondemand_usd": recomputed.ondemand_usd,
                "accelerator": recomputed.accelerator,
                "instance_type": recomputed.instance_type,
                "commitment_id": recomputed.commitment_id,
                "capacity_type": recomputed.capacity_type,
                "updated_at": recomputed.updated_at,
            },
        )
        # executemany of one compiled statement: the driver batches the rows ("insertmanyvalues");
        # a single multi-VALUES statement spent seconds compiling per thousand rows.
        session.connection().execute(upsert, records)
    return len(records)


__all__ = ["rollup"]
