"""The pure cost math on hand-computed examples, plus properties: windows split and add up exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.costs import (
    Charge,
    PriceChange,
    UsedRun,
    commitment_cost,
    commitment_term,
    instance_cost,
    integrate,
    price_at,
    run_schedule,
    utc_days,
)

T0 = datetime(2026, 11, 10, tzinfo=UTC)
H = timedelta(hours=1)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_per_second_proration() -> None:
    # 1 h 30 min 1 s at $3.60/h on 8 GPUs: $5.401 exactly, 12.0022... GPU-hours.
    cost = instance_cost(
        launched_at=T0,
        ended_at=T0 + timedelta(hours=1, minutes=30, seconds=1),
        gpus=8,
        launch_price=Decimal("3.60"),
        window_start=T0,
        window_end=at(24),
    )
    assert cost.usd == Decimal("5.401")
    assert cost.gpu_hours == Decimal(8) * Decimal(5401) / Decimal(3600)
    assert cost.ondemand_usd is None


def test_spot_price_change_mid_run() -> None:
    changes = [
        PriceChange(at(9), Decimal(99)),  # before launch: never applies
        PriceChange(at(12), Decimal(8)),
        PriceChange(at(13), Decimal(4)),
    ]
    cost = instance_cost(
        launched_at=at(10),
        ended_at=at(14),
        gpus=8,
        launch_price=Decimal(16),
        window_start=T0,
        window_end=at(24),
        price_changes=changes,
        ondemand_prices=[PriceChange(at(-24), Decimal(40))],
    )
    assert cost.usd == Decimal(2 * 16 + 8 + 4)
    assert cost.gpu_hours == Decimal(32)
    assert cost.ondemand_usd == Decimal(160)
    assert cost.price_per_hour == Decimal(4)


def test_change_at_launch_does_not_replace_the_launch_price() -> None:
    prices = run_schedule(at(10), Decimal(16), [PriceChange(at(10), Decimal(1))])
    assert prices == (PriceChange(at(10), Decimal(16)),)


def test_run_across_midnight_splits_into_days() -> None:
    common = {
        "launched_at": at(22),
        "ended_at": at(26),
        "gpus": 4,
        "launch_price": Decimal(10),
        "price_changes": [PriceChange(at(25), Decimal(6))],
    }
    day1 = instance_cost(**common, window_start=T0, window_end=at(24))
    day2 = instance_cost(**common, window_start=at(24), window_end=at(48))
    assert (day1.usd, day1.gpu_hours) == (Decimal(20), Decimal(8))
    assert (day2.usd, day2.gpu_hours) == (Decimal(16), Decimal(8))  # 1 h at $10, 1 h at $6
    assert day1.price_per_hour == Decimal(10) and day2.price_per_hour == Decimal(6)
    assert utc_days(at(22), at(26)) == [(at(22), at(24)), (at(24), at(26))]


def test_window_clipping() -> None:
    cost = instance_cost(
        launched_at=at(-5),
        ended_at=None,  # still running: counts to the window's end
        gpus=2,
        launch_price=Decimal("2.5"),
        window_start=T0,
        window_end=at(3),
    )
    assert (cost.usd, cost.gpu_hours) == (Decimal("7.5"), Decimal(6))
    outside = instance_cost(
        launched_at=at(5), ended_at=at(6), gpus=2, launch_price=Decimal(1), window_start=T0, window_end=at(3)
    )
    assert (outside.usd, outside.gpu_hours) == (0, 0)


def test_instance_on_a_commitment_costs_nothing_but_keeps_its_counterfactual() -> None:
    cost = instance_cost(
        launched_at=T0,
        ended_at=at(12),
        gpus=8,
        launch_price=Decimal(16),
        window_start=T0,
        window_end=at(24),
        ondemand_prices=[PriceChange(T0, Decimal(40))],
        commitment_term=(T0, at(48)),
    )
    assert (cost.usd, cost.gpu_hours, cost.ondemand_usd, cost.price_per_hour) == (0, 96, 480, 0)


def test_an_instance_that_outlives_its_commitment_pays_on_demand_from_the_contracts_end() -> None:
    # docs/costs.md: 8 GPUs, contract ends at 12:00, the run is 10:00-14:00, on-demand $40/h.
    common = dict(
        launched_at=at(10),
        ended_at=at(14),
        gpus=8,
        launch_price=Decimal(16),  # the contract's $2/GPU-hour, recorded at launch
        window_start=T0,
        window_end=at(24),
        ondemand_prices=[PriceChange(T0, Decimal(40))],
    )
    cost = instance_cost(**common, commitment_term=(T0, at(12)))
    assert (cost.usd, cost.gpu_hours, cost.ondemand_usd, cost.price_per_hour) == (80, 32, 160, 40)
    # The window before the end sees only the covered part; the day after, only the billed part.
    assert instance_cost(**common | {"window_end": at(12)}, commitment_term=(T0, at(12))).usd == 0
    assert instance_cost(**common | {"window_start": at(12)}, commitment_term=(T0, at(12))).usd == 80
    # A contract that starts after launch (or was cancelled before it began) covers what it covers.
    late = instance_cost(**common, commitment_term=(at(11), at(13)))
    assert (late.usd, late.price_per_hour) == (Decimal(80), Decimal(40))
    never = instance_cost(**common, commitment_term=(at(30), at(30)))
    assert (never.usd, never.price_per_hour) == (160, 40)


def test_without_an_on_demand_price_an_expired_commitment_bills_the_launch_price() -> None:
    cost = instance_cost(
        launched_at=T0,
        ended_at=at(4),
        gpus=8,
        launch_price=Decimal(16),
        window_start=T0,
        window_end=at(24),
        commitment_term=(T0, at(1)),
    )
    assert (cost.usd, cost.ondemand_usd, cost.price_per_hour) == (48, None, 16)


def test_commitment_half_used() -> None:
    cost = commitment_cost(
        starts_at=at(6),
        ends_at=at(72),
        deleted_at=None,
        gpu_count=16,
        price_per_gpu_hour=Decimal(2),
        window_start=T0,
        window_end=at(24),
        # 8 GPUs 06-18 on it, and 8 more from 20:00 that ran since before the term
        used=[UsedRun(at(6), at(18), 8), UsedRun(at(-3), None, 8)],
    )
    assert cost.committed_gpu_hours == Decimal(288)  # 16 x 18 h
    assert cost.usd == Decimal(576)
    assert cost.used_gpu_hours == Decimal(96 + 8 * 18)  # the second run counts from 06:00 only
    assert cost.idle_waste_usd == Decimal((288 - 240) * 2)


def test_commitment_used_beyond_its_count_is_capped() -> None:
    cost = commitment_cost(
        starts_at=T0,
        ends_at=at(1),
        deleted_at=None,
        gpu_count=8,
        price_per_gpu_hour=Decimal(1),
        window_start=T0,
        window_end=at(1),
        used=[UsedRun(T0, at(1), 8), UsedRun(T0, at(1), 8)],
    )
    assert cost.used_gpu_hours == cost.committed_gpu_hours == Decimal(8)
    assert cost.idle_waste_usd == 0


def test_soft_deleted_commitment_stops_charging_at_deleted_at() -> None:
    assert commitment_term(T0, at(48), at(12)) == (T0, at(12))
    assert commitment_term(at(13), at(48), at(12)) is None
    cost = commitment_cost(
        starts_at=T0,
        ends_at=at(48),
        deleted_at=at(12),
        gpu_count=10,
        price_per_gpu_hour=Decimal("1.5"),
        window_start=T0,
        window_end=at(24),
    )
    assert (cost.committed_gpu_hours, cost.usd) == (Decimal(120), Decimal(180))


def test_price_at_and_bad_input() -> None:
    prices = (PriceChange(at(1), Decimal(4)), PriceChange(at(3), Decimal(5)))
    assert price_at(prices, T0) == 4  # before the first: the first known
    assert price_at(prices, at(3)) == 5
    with pytest.raises(ValueError, match="negative"):
        PriceChange(T0, Decimal(-1))
    with pytest.raises(TypeError):
        PriceChange(T0, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone"):
        PriceChange(datetime(2026, 1, 1), Decimal(1))  # noqa: DTZ001 - the naive time under test
    with pytest.raises(ValueError, match="gpus"):
        instance_cost(
            launched_at=T0, ended_at=at(1), gpus=0, launch_price=Decimal(1), window_start=T0, window_end=at(1)
        )


# --- properties --------------------------------------------------------------------------------

_minutes = st.integers(min_value=0, max_value=72 * 60)
_seconds = st.integers(min_value=0, max_value=72 * 3600)
_price = st.decimals(min_value=0, max_value=200, places=4, allow_nan=False, allow_infinity=False)
_changes = st.lists(st.tuples(_seconds, _price), max_size=6)


def _t(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


@given(
    launch=_seconds,
    run=_seconds,
    window=st.tuples(_seconds, _seconds, _seconds).map(sorted),
    gpus=st.integers(min_value=1, max_value=16),
    launch_price=_price,
    changes=_changes,
    ondemand=_changes,
    micros=st.integers(min_value=0, max_value=999_999),
)
def test_splitting_a_window_in_two_gives_the_same_total(
    launch: int,
    run: int,
    window: list[int],
    gpus: int,
    launch_price: Decimal,
    changes: list[tuple[int, Decimal]],
    ondemand: list[tuple[int, Decimal]],
    micros: int,
) -> None:
    start, cut, end = (_t(s) for s in window)
    cut += timedelta(microseconds=micros) if cut < end else timedelta(0)
    cut = min(cut, end)
    common = {
        "launched_at": _t(launch),
        "ended_at": _t(launch + run),
        "gpus": gpus,
        "launch_price": launch_price,
        "price_changes": [PriceChange(_t(s), p) for s, p in changes],
        "ondemand_prices": [PriceChange(_t(s), p) for s, p in ondemand],
    }
    whole = instance_cost(**common, window_start=start, window_end=end)
    first = instance_cost(**common, window_start=start, window_end=cut)
    second = instance_cost(**common, window_start=cut, window_end=end)
    # Exactly: the accumulated amounts are integers of microseconds times decimal prices.
    assert first.charge + second.charge == whole.charge
    if ondemand:
        assert first.ondemand_charge is not None and second.ondemand_charge is not None
        assert first.ondemand_charge + second.ondemand_charge == whole.ondemand_charge


@given(
    starts=_seconds,
    term=st.integers(min_value=1, max_value=72 * 3600),
    deleted=st.one_of(st.none(), _seconds),
    window=st.tuples(_seconds, _seconds, _seconds).map(sorted),
    gpu_count=st.integers(min_value=1, max_value=1000),
    price=_price,
)
def test_commitment_charges_split_exactly_and_never_exceed_the_contract(
    starts: int, term: int, deleted: int | None, window: list[int], gpu_count: int, price: Decimal
) -> None:
    start, cut, end = (_t(s) for s in window)
    common = {
        "starts_at": _t(starts),
        "ends_at": _t(starts + term),
        "deleted_at": None if deleted is None else _t(deleted),
        "gpu_count": gpu_count,
        "price_per_gpu_hour": price,
    }
    whole = commitment_cost(**common, window_start=start, window_end=end)
    first = commitment_cost(**common, window_start=start, window_end=cut)
    second = commitment_cost(**common, window_start=cut, window_end=end)
    assert first.charge + second.charge == whole.charge
    assert whole.committed_gpu_hours <= Decimal(gpu_count * term) / 3600


@given(changes=_changes, launch_price=_price, run=st.integers(min_value=1, max_value=72 * 3600))
def test_usd_lies_between_the_cheapest_and_dearest_price_paid(
    changes: list[tuple[int, Decimal]], launch_price: Decimal, run: int
) -> None:
    prices = run_schedule(T0, launch_price, [PriceChange(_t(s), p) for s, p in changes])
    charge = integrate(prices, T0, _t(run), gpus=1)
    paid = [p.price_per_hour for p in prices if p.at < _t(run)]
    hours = Decimal(run) / 3600
    assert min(paid) * hours - Decimal("1e-20") <= charge.usd <= max(paid) * hours + Decimal("1e-20")
    assert Charge() + charge == charge
