"""What the replay engine sees: venues, per-tick spot availability and prices, egress (pure: no I/O).

A ``TraceSeries`` is one zone's trace as loaded from disk (``broker.simulation.traces`` builds
it); a ``Market`` is a window of several series cut to the same ticks, with the on-demand prices
and the egress / transfer-time matrices between venues. Prices are ``Decimal`` USD per
instance-hour; ``None`` means the venue does not sell that capacity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from broker.core.deadline import Venue

_Row = tuple  # one tick's per-venue values (availability flags or prices)


@dataclass(frozen=True, slots=True)
class TraceSeries:
    """One zone's spot trace: whether a spot launch succeeds in each tick, and its price there.

    ``spot_prices`` is per tick when the trace carries prices, else ``None`` (the scenario then
    supplies a constant). ``on_demand_price`` / ``list_spot_price`` come from the file's metadata
    when it has them.
    """

    name: str
    cloud: str
    region: str
    zone: str
    instance_type: str
    gap_seconds: int
    available: tuple[bool, ...]
    spot_prices: tuple[Decimal, ...] | None = None
    on_demand_price: Decimal | None = None
    list_spot_price: Decimal | None = None

    def __post_init__(self) -> None:
        if self.gap_seconds <= 0:
            raise ValueError(f"{self.name}: gap_seconds must be positive, got {self.gap_seconds}")
        if self.spot_prices is not None and len(self.spot_prices) != len(self.available):
            raise ValueError(
                f"{self.name}: {len(self.spot_prices)} prices for {len(self.available)} ticks"
            )

    @property
    def n_ticks(self) -> int:
        return len(self.available)

    @property
    def venue(self) -> Venue:
        return Venue(name=self.zone, cloud=self.cloud, region=self.region, zone=self.zone)


@dataclass(frozen=True, slots=True)
class Market:
    """A replay window: ``n_ticks`` ticks of ``tick_seconds`` over ``venues``.

    ``available[t][i]`` says whether a spot launch in venue ``i`` succeeds during tick ``t``;
    ``spot_price[t][i]`` / ``on_demand_price[t][i]`` are that tick's hourly prices (``None``:
    not sold there). ``egress_per_gb[i][j]`` is USD/GB from venue ``i`` to ``j``;
    ``transfer_hours[i][j]`` the extra launch time such a move adds.
    """

    label: str
    venues: tuple[Venue, ...]
    tick_seconds: int
    available: tuple[tuple[bool, ...], ...]
    spot_price: tuple[tuple[Decimal | None, ...], ...]
    on_demand_price: tuple[tuple[Decimal | None, ...], ...]
    egress_per_gb: tuple[tuple[Decimal, ...], ...]
    transfer_hours: tuple[tuple[float, ...], ...]
    tick_hours: float = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.venues)
        if n == 0:
            raise ValueError(f"{self.label}: a market needs at least one venue")
        if self.tick_seconds <= 0:
            raise ValueError(f"{self.label}: tick_seconds must be positive, got {self.tick_seconds}")
        ticks = len(self.available)
        if len(self.spot_price) != ticks or len(self.on_demand_price) != ticks:
            raise ValueError(f"{self.label}: availability and price series differ in length")
        for series in (self.available, self.spot_price, self.on_demand_price):
            if set(map(len, series)) - {n}:
                raise ValueError(f"{self.label}: some tick does not cover the {n} venues")
        for matrix, what in ((self.egress_per_gb, "egress_per_gb"), (self.transfer_hours, "transfer_hours")):
            if len(matrix) != n or any(len(row) != n for row in matrix):
                raise ValueError(f"{self.label}: {what} must be {n}x{n}")
        for i in range(n):
            if self.egress_per_gb[i][i] != 0 or self.transfer_hours[i][i] != 0:
                raise ValueError(f"{self.label}: moving within venue {i} must be free and instant")
            for j in range(n):
                if self.egress_per_gb[i][j] < 0 or self.transfer_hours[i][j] < 0:
                    raise ValueError(f"{self.label}: egress and transfer time must be non-negative")
        object.__setattr__(self, "tick_hours", self.tick_seconds / 3600.0)

    @property
    def n_ticks(self) -> int:
        return len(self.available)

    def ticks_for(self, deadline_hours: float) -> int:
        """Ticks a job with this deadline can use (the last one may end after the deadline)."""
        return math.ceil(deadline_hours / self.tick_hours - 1e-9)

    def only(self, venue: int) -> Market:
        """The same window restricted to one venue (for single-region policies)."""
        if len(self.venues) == 1 and venue == 0:
            return self
        return self.subset((venue,), label=f"{self.label} / {self.venues[venue].name}")

    def subset(self, keep: Sequence[int], *, label: str | None = None) -> Market:
        """The same window over the venues ``keep`` (in that order)."""
        return Market(
            label=label if label is not None else self.label,
            venues=tuple(self.venues[i] for i in keep),
            tick_seconds=self.tick_seconds,
            available=_shared([tuple(row[i] for i in keep) for row in self.available]),
            spot_price=_shared([tuple(row[i] for i in keep) for row in self.spot_price]),
            on_demand_price=_shared([tuple(row[i] for i in keep) for row in self.on_demand_price]),
            egress_per_gb=tuple(tuple(self.egress_per_gb[i][j] for j in keep) for i in keep),
            transfer_hours=tuple(tuple(self.transfer_hours[i][j] for j in keep) for i in keep),
        )


def _shared(rows: list[_Row]) -> tuple[_Row, ...]:
    # Identical consecutive rows share one tuple: windows are long and prices rarely move.
    out: list[_Row] = []
    for row in rows:
        out.append(out[-1] if out and out[-1] == row else row)
    return tuple(out)


def window(
    label: str,
    series: Sequence[TraceSeries],
    *,
    start_tick: int,
    n_ticks: int,
    on_demand_prices: Sequence[Decimal | None],
    egress_per_gb: Sequence[Sequence[Decimal]],
    transfer_hours: Sequence[Sequence[float]] | None = None,
    constant_spot_prices: Sequence[Decimal | None] | None = None,
    extra_on_demand: Sequence[tuple[Venue, Decimal]] = (),
) -> Market:
    """Cut ``n_ticks`` ticks starting at ``start_tick`` out of aligned series.

    Spot prices come from each series' per-tick prices unless ``constant_spot_prices`` gives one
    per series. ``extra_on_demand`` appends venues that sell on-demand only (no spot market),
    e.g. another cloud's offer; the egress/transfer matrices must then cover them too.
    """
    if not series:
        raise ValueError(f"{label}: no trace series")
    gaps = {s.gap_seconds for s in series}
    if len(gaps) != 1:
        raise ValueError(f"{label}: series have different tick lengths {sorted(gaps)}")
    if start_tick < 0 or n_ticks <= 0:
        raise ValueError(f"{label}: bad window start={start_tick} length={n_ticks}")
    for s in series:
        if start_tick + n_ticks > s.n_ticks:
            raise ValueError(
                f"{label}: {s.name} has {s.n_ticks} ticks, the window needs {start_tick + n_ticks}"
            )
    if len(on_demand_prices) != len(series):
        raise ValueError(f"{label}: one on-demand price per series, got {len(on_demand_prices)}")
    if constant_spot_prices is not None and len(constant_spot_prices) != len(series):
        raise ValueError(f"{label}: one constant spot price per series")
    venues = tuple(s.venue for s in series) + tuple(v for v, _ in extra_on_demand)
    n_extra = len(extra_on_demand)
    end = start_tick + n_ticks
    columns: list[Sequence[Decimal | None]] = []
    for i, s in enumerate(series):
        if constant_spot_prices is not None:
            columns.append((constant_spot_prices[i],) * n_ticks)
        elif s.spot_prices is not None:
            columns.append(s.spot_prices[start_tick:end])
        else:
            raise ValueError(f"{label}: {s.name} has no spot prices and no constant was given")
    # zip builds each tick's row in C; extra venues never have a spot market.
    no_spot: list[tuple[object, ...]] = [(False,) * n_ticks] * n_extra
    available = list(zip(*(s.available[start_tick:end] for s in series), *no_spot, strict=True))
    spot = list(zip(*columns, *([(None,) * n_ticks] * n_extra), strict=True))
    od_row = tuple(on_demand_prices) + tuple(p for _, p in extra_on_demand)
    n = len(venues)
    transfer = transfer_hours if transfer_hours is not None else [[0.0] * n for _ in range(n)]
    return Market(
        label=label,
        venues=venues,
        tick_seconds=gaps.pop(),
        available=_shared(available),
        spot_price=_shared(spot),
        on_demand_price=tuple(od_row for _ in range(n_ticks)),
        egress_per_gb=tuple(tuple(row) for row in egress_per_gb),
        transfer_hours=tuple(tuple(float(x) for x in row) for row in transfer),
    )
