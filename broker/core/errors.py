"""Typed provider errors: every adapter raises only these, never a raw SDK exception (pure: no I/O).

The set is small on purpose: the scheduler decides what to do from the type alone.
``Transient`` is the only retryable kind; the others are answers (no capacity, no quota, no
such thing, bad credentials, bad request) that a retry would not change.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every provider error. ``provider``/``region`` say where; ``code`` is the provider's own."""

    retryable = False

    def __init__(
        self, message: str, *, provider: str = "", region: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.region = region
        self.code = code

    def __str__(self) -> str:
        where = "/".join(part for part in (self.provider, self.region) if part)
        code = f" [{self.code}]" if self.code else ""
        return f"{where}: {self.message}{code}" if where else f"{self.message}{code}"


class InsufficientCapacity(ProviderError):
    """The provider has no capacity for this request right now (stockout, spot pool exhausted)."""


class QuotaExceeded(ProviderError):
    """The account's quota or limit does not allow this request."""


class NotFound(ProviderError):
    """The instance (or other resource) does not exist. For terminate this counts as done."""


class AuthError(ProviderError):
    """Credentials are missing, invalid or lack permission."""


class InvalidRequest(ProviderError):
    """The provider rejected the request as malformed or unsupported (a bug or bad input, not luck)."""


class Transient(ProviderError):
    """A failure that may pass: timeout, throttling, 5xx, connection reset. Safe to retry with backoff.

    ``retry_after`` is the provider's hint in seconds (e.g. HTTP Retry-After), when it gives one.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        region: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, region=region, code=code)
        self.retry_after = retry_after


class ProviderUnavailable(Transient):
    """The resilience layer refused the call: the provider's circuit breaker is open."""


__all__ = [
    "AuthError",
    "InsufficientCapacity",
    "InvalidRequest",
    "NotFound",
    "ProviderError",
    "ProviderUnavailable",
    "QuotaExceeded",
    "Transient",
]
