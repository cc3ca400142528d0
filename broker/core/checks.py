"""Validation shared by the core's frozen dataclasses: money and timestamps (pure: no I/O)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal


def check_amount(name: str, value: Decimal | None, *, positive: bool = False) -> None:
    """``value`` must be a finite non-negative (or positive) ``Decimal``; ``None`` passes."""
    if value is None:
        return
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be Decimal, got {type(value).__name__}")
    if not value.is_finite() or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite {kind} amount, got {value}")


def check_aware(name: str, value: datetime | None) -> None:
    """``value`` must carry a time zone; ``None`` passes."""
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")


__all__ = ["check_amount", "check_aware"]
