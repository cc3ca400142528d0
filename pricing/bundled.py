"""The price snapshot shipped with gpubroker: read it from package data (reads files, no network)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from broker.core.types import Offer
from pricing.snapshot import parse_offers_csv

BUNDLED_SOURCE = "bundled"
SOURCE_NAME = "pricing/data/offers.csv"


@dataclass(frozen=True, slots=True)
class BundledSnapshot:
    offers: list[Offer]
    content_sha256: str
    observed_at: datetime


def bundled_sha256() -> str:
    """Content hash of the shipped table (cheap: lets a caller skip parsing what is already stored)."""
    return hashlib.sha256((resources.files("pricing") / "data" / "offers.csv").read_bytes()).hexdigest()


def bundled_snapshot() -> BundledSnapshot:
    """Parse the shipped table with its provenance (``offers.meta.json``)."""
    data = resources.files("pricing") / "data"
    raw = (data / "offers.csv").read_bytes()
    meta = json.loads((data / "offers.meta.json").read_text(encoding="utf-8"))
    observed_at = datetime.fromisoformat(str(meta["observed_at"]))
    sources = {cloud: f"{BUNDLED_SOURCE}:{where}" for cloud, where in dict(meta["sources"]).items()}
    offers = parse_offers_csv(
        raw.decode("utf-8"), source_name=SOURCE_NAME, observed_at=observed_at, sources=sources
    )
    return BundledSnapshot(offers, hashlib.sha256(raw).hexdigest(), observed_at)
