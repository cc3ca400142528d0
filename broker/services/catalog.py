"""Price catalog use-cases: load the bundled snapshot, import SkyPilot catalog files (does I/O)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from broker.db.prices import SnapshotRecord, add_snapshot, find_snapshot
from pricing.bundled import BUNDLED_SOURCE, SOURCE_NAME, bundled_sha256, bundled_snapshot
from pricing.rows import CatalogFormatError, CatalogProblem
from pricing.skypilot import SUPPORTED_CLOUDS, cloud_from_path, parse_vms_csv


class CatalogImportError(ValueError):
    """A catalog file could not be imported; nothing was stored. The message says why."""


def load_bundled_snapshot(session: Session) -> SnapshotRecord:
    """Store the price snapshot shipped with gpubroker, once (later calls return the stored one)."""
    existing = find_snapshot(session, bundled_sha256())
    if existing is not None:
        return existing
    bundled = bundled_snapshot()
    return add_snapshot(
        session,
        bundled.offers,
        source=BUNDLED_SOURCE,
        source_name=SOURCE_NAME,
        content_sha256=bundled.content_sha256,
        observed_at=bundled.observed_at,
        clouds={o.cloud for o in bundled.offers},
    )


def import_skypilot_catalog(
    session: Session, path: Path, *, cloud: str | None = None, observed_at: datetime | None = None
) -> SnapshotRecord:
    """Import one SkyPilot ``vms.csv`` as a new snapshot for its cloud, all or nothing.

    The cloud comes from ``cloud`` or from the path (``.../v8/<cloud>/vms.csv``). The prices'
    ``observed_at`` defaults to the file's modification time: when SkyPilot fetched the catalog.
    """
    cloud = (cloud or cloud_from_path(str(path)) or "").lower() or None
    if cloud is None:
        raise CatalogImportError(
            f"{path}: cannot tell which cloud this catalog is for; pass --cloud "
            f"({', '.join(SUPPORTED_CLOUDS)})"
        )
    if cloud not in SUPPORTED_CLOUDS:
        raise CatalogImportError(
            f"{path}: cloud {cloud!r} is not supported; supported: {', '.join(SUPPORTED_CLOUDS)}"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CatalogImportError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogFormatError(
            str(path), [CatalogProblem(None, None, f"not UTF-8 text (byte {exc.start})")]
        ) from exc
    if observed_at is None:
        observed_at = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    source = f"skypilot:{cloud}"
    offers = parse_vms_csv(text, cloud=cloud, source_name=str(path), observed_at=observed_at, source=source)
    return add_snapshot(
        session,
        offers,
        source=source,
        source_name=str(path),
        content_sha256=hashlib.sha256(f"{cloud}\n".encode() + raw).hexdigest(),
        observed_at=observed_at,
        clouds={cloud},
    )
