"""Reads the shared spot-trace JSON files into ``TraceSeries`` (does I/O: reads files).

The files are the project's re-packaged public traces (``../shared/data/spot-traces``; see its
README): ``data[i]`` is the number of spot instances obtainable in tick ``i`` (positive =
available, ``null`` = no sample, read here as unavailable), optional ``prices`` are the spot
USD/h per tick, and the metadata may carry the zone's list prices.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

from broker.simulation.market import TraceSeries

TRACES_ENV = "GPUBROKER_TRACES"
DEFAULT_RELATIVE = Path("..") / "shared" / "data" / "spot-traces"


class TracesNotFound(FileNotFoundError):
    """The shared trace folder (or a file the scenario needs) is not there."""


def traces_dir(explicit: str | os.PathLike[str] | None = None, *, cwd: Path | None = None) -> Path:
    """Where the traces are: ``explicit``, else ``$GPUBROKER_TRACES``, else ``../shared/data/spot-traces``."""
    if explicit is not None:
        return Path(explicit)
    from_env = os.environ.get(TRACES_ENV)
    if from_env:
        return Path(from_env)
    return (cwd if cwd is not None else Path.cwd()) / DEFAULT_RELATIVE


def require_dir(root: Path) -> Path:
    if not root.is_dir():
        raise TracesNotFound(
            f"spot traces not found: {root} is not a directory. Point --traces (or ${TRACES_ENV}) "
            "at the shared spot-traces folder (the one holding index.csv and gcp/, aws/)."
        )
    return root


def _metadata_price(meta: dict[str, object], prefix: str) -> Decimal | None:
    for key, value in meta.items():
        if key.startswith(prefix) and value is not None:
            return Decimal(str(value))
    return None


def load_series(root: Path, relative: str) -> TraceSeries:
    """One trace file, ``relative`` to the traces folder."""
    path = require_dir(root) / relative
    if not path.is_file():
        raise TracesNotFound(f"trace file missing: {path} (is {root} the shared spot-traces folder?)")
    # parse_float=Decimal keeps the prices exactly as written in the file.
    doc = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    meta: dict[str, object] = doc["metadata"]
    gap = meta["gap_seconds"]
    if int(gap) != gap:  # type: ignore[call-overload]
        raise ValueError(f"{path}: gap_seconds {gap} is not whole seconds")
    prices = doc.get("prices")
    return TraceSeries(
        name=relative,
        cloud=str(meta["cloud"]),
        region=str(meta["region"]),
        zone=str(meta["zone"]),
        instance_type=str(meta["instance_type"]),
        gap_seconds=int(gap),  # type: ignore[call-overload]
        available=tuple(v is not None and v > 0 for v in doc["data"]),
        spot_prices=None if prices is None else tuple(Decimal(p) for p in prices),
        on_demand_price=_metadata_price(meta, "on_demand_price"),
        list_spot_price=_metadata_price(meta, "spot_price"),
    )
