"""Provider status reports: probe providers (CLI) or describe their live state (API) (does I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from broker.core.errors import ProviderError
from broker.services.prices import RefreshOutcome
from providers.registry import ProviderEntry


@dataclass(frozen=True, slots=True)
class BreakerView:
    region: str
    state: str
    consecutive_failures: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ProviderReport:
    """What an operator wants to know about one provider."""

    name: str
    configured: bool
    reachable: bool | None  # None: not probed
    detail: str
    h100_offers: int | None
    breakers: list[BreakerView] = field(default_factory=list)
    last_error: str | None = None
    capacity_types: list[str] = field(default_factory=list)
    interruption_notice_seconds: int | None = None

    @property
    def breaker_state(self) -> str:
        """The worst breaker state across regions ("-" when none has been used)."""
        states = {b.state for b in self.breakers}
        for state in ("open", "half-open", "closed"):
            if state in states:
                return state
        return "-"


def _breakers(entry: ProviderEntry) -> list[BreakerView]:
    if entry.provider is None:
        return []
    return [
        BreakerView(region, b.state.value, b.consecutive_failures, b.last_error)
        for region, b in sorted(entry.provider.breakers().items())
    ]


def describe(entry: ProviderEntry, last_refresh: RefreshOutcome | None = None) -> ProviderReport:
    """The provider's state as this process knows it, without calling the provider."""
    provider = entry.provider
    if provider is None:
        return ProviderReport(entry.info.name, False, None, entry.problem or "not configured", None)
    capabilities = provider.capabilities
    return ProviderReport(
        name=entry.info.name,
        configured=True,
        reachable=None if last_refresh is None else last_refresh.ok,
        detail=""
        if last_refresh is None
        else (last_refresh.error or f"{last_refresh.offers} offers refreshed"),
        h100_offers=None,
        breakers=_breakers(entry),
        last_error=provider.last_error,
        capacity_types=sorted(c.value for c in capabilities.capacity_types),
        interruption_notice_seconds=capabilities.interruption_notice_seconds,
    )


def probe(entry: ProviderEntry) -> ProviderReport:
    """Call the provider: its health check, then its offers (counting H100s); report breakers after."""
    provider = entry.provider
    if provider is None:
        return describe(entry)
    status = provider.check()
    h100: int | None = None
    detail = status.detail
    try:
        h100 = sum(1 for o in provider.list_offers() if o.accelerator == "H100")
    except ProviderError as exc:
        detail = f"{detail}; offers: {exc}" if detail else f"offers: {exc}"
    return replace(
        describe(entry),
        reachable=status.reachable and h100 is not None,
        detail=detail,
        h100_offers=h100,
        breakers=_breakers(entry),  # after the calls above: they may have tripped a breaker
        last_error=provider.last_error,
    )
