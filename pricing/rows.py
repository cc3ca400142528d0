"""Reading catalog rows: typed fields, and problems that name the file, line and field (pure: no I/O).

Shared by every catalog parser, so that every import reports bad input the same way and
accepts numbers by the same rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

MAX_REPORTED_PROBLEMS = 50

# A plain ASCII decimal literal: optional sign, digits with an optional point, optional exponent.
# (Decimal() alone would also accept "NaN", "Infinity" and "1_000".)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = frozenset({"nan", "snan", "inf", "infinity"})


@dataclass(frozen=True)
class CatalogProblem:
    """One thing wrong with a catalog file."""

    line: int | None  # 1-based physical line (header = 1); None for file-level problems
    field: str | None  # the column, when the problem is about one field
    message: str

    def render(self, source_name: str) -> str:
        """``FILE:LINE: field X: message`` (parts that do not apply are left out)."""
        where = source_name if self.line is None else f"{source_name}:{self.line}"
        what = self.message if self.field is None else f"field {self.field}: {self.message}"
        return f"{where}: {what}"


class CatalogFormatError(ValueError):
    """Raised with every problem found.

    str() names the file, then each problem as 'FILE:LINE: field X: message' (the first
    MAX_REPORTED_PROBLEMS of them, then how many more); ``problems`` holds them all.
    """

    def __init__(self, source_name: str, problems: list[CatalogProblem]) -> None:
        self.source_name = source_name
        self.problems = list(problems)
        super().__init__(self._describe())

    def _describe(self) -> str:
        count = len(self.problems)
        lines = [f"{self.source_name}: {count} problem{'' if count == 1 else 's'} in price catalog"]
        lines += [p.render(self.source_name) for p in self.problems[:MAX_REPORTED_PROBLEMS]]
        if count > MAX_REPORTED_PROBLEMS:
            lines.append(f"... and {count - MAX_REPORTED_PROBLEMS} more problems")
        return "\n".join(lines)

    def __reduce__(self) -> tuple[type[CatalogFormatError], tuple[str, list[CatalogProblem]]]:
        return (type(self), (self.source_name, self.problems))


class RowFields:
    """Typed access to one row's fields, recording problems against its line."""

    def __init__(self, values: Mapping[str, str], line: int, problems: list[CatalogProblem]) -> None:
        self.values = values
        self.line = line
        self.problems = problems
        self.ok = True

    def fail(self, field: str, message: str) -> None:
        self.problems.append(CatalogProblem(self.line, field, message))
        self.ok = False

    def text(self, field: str) -> str:
        return self.values.get(field, "").strip()

    def number(self, field: str, *, what: str) -> Decimal | None:
        """A non-negative finite Decimal, or None when empty."""
        raw = self.text(field)
        if not raw:
            return None
        if not _NUMBER.fullmatch(raw):
            kind = "not a finite number" if raw.lstrip("+-").lower() in _NON_FINITE else "not a number"
            self.fail(field, f"{kind}: {raw!r}")
            return None
        value = Decimal(raw)
        if value < 0:
            self.fail(field, f"negative {what}: {raw}")
            return None
        return value

    def accelerator_count(self, field: str) -> int | None:
        """A whole positive count; None (without a problem) for a fractional GPU share."""
        raw = self.text(field)
        if not raw:
            self.fail(field, "empty, but the row names an accelerator")
            return None
        if not _NUMBER.fullmatch(raw):
            self.fail(field, f"not a number: {raw!r}")
            return None
        value = Decimal(raw)
        if value <= 0:
            self.fail(field, f"must be a positive number of accelerators, got {raw}")
            return None
        if value < 1:
            return None  # fractional GPU (AWS g6f, Azure NV*ads_A10_v5): valid, not a whole-GPU offer
        if value != value.to_integral_value():
            self.fail(field, f"not a whole number of accelerators: {raw}")
            return None
        return int(value)
