"""Accounting: roll instance run time up into per-day cost records (does I/O).

A cost record is one instance's GPU-hours and dollars on one UTC day, recomputed from the
instance's run interval (``launched_at`` to ``ended_at``, or now while it runs) and its price.
The rollup is idempotent (an upsert of the recomputed values), so running it twice, or on two
replicas, or after a crash, gives the same records. Commitment instances carry the contract's
price: their records show what the capacity cost, already paid or not.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

ROLLUP_SQL = text(
    """
    INSERT INTO cost_record AS c (instance_id, day, org_id, project_id, workload_id, provider, region,
                                  capacity_type, commitment_id, gpu_hours, usd, updated_at)
    SELECT i.id, d.day::date, i.org_id, i.project_id, i.workload_id, i.provider, i.region,
           i.capacity_type, i.commitment_id, i.gpus * h.hours, i.price_per_hour * h.hours, :now
    FROM instance i
    CROSS JOIN LATERAL generate_series(
        date_trunc('day', greatest(i.launched_at, :since), 'UTC'),
        date_trunc('day', coalesce(i.ended_at, :now), 'UTC'),
        interval '1 day') AS d(day)
    CROSS JOIN LATERAL (
        SELECT extract(epoch FROM least(coalesce(i.ended_at, :now), d.day + interval '1 day')
                                  - greatest(i.launched_at, d.day)) / 3600 AS hours) AS h
    WHERE i.launched_at IS NOT NULL
      AND coalesce(i.ended_at, :now) > :since
      AND h.hours > 0
    ON CONFLICT (instance_id, day) DO UPDATE
        SET gpu_hours = excluded.gpu_hours, usd = excluded.usd, updated_at = excluded.updated_at
    """
)


def rollup(session: Session, now: datetime, *, lookback: timedelta = timedelta(days=2)) -> int:
    """Recompute the cost records of every instance that ran since ``now - lookback``; returns rows."""
    since = datetime.combine((now - lookback).date(), datetime.min.time(), tzinfo=now.tzinfo)
    result = session.execute(ROLLUP_SQL, {"now": now, "since": since})
    return result.rowcount or 0


__all__ = ["rollup"]
