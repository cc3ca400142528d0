"""The one HTTP client factory and HTTP-status error mapping for REST adapters (does I/O).

Adapters make single attempts: retries, backoff, rate limits and circuit breaking live in the
resilience layer (``providers/resilience.py``), once for every provider. Each adapter maps its
provider's own error codes first (a capacity error hidden in a 400 body, say) and falls back to
:func:`error_for_status` for the rest.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import httpx

from broker.core.errors import (
    AuthError,
    InvalidRequest,
    NotFound,
    ProviderError,
    QuotaExceeded,
    Transient,
)

_P = ParamSpec("_P")
_R = TypeVar("_R")

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
USER_AGENT = "gpubroker/0.1 (+https://github.com/gpubroker/gpubroker)"


def make_client(
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    auth: httpx.Auth | None = None,
) -> httpx.Client:
    """An httpx client for one provider API. Secrets go in ``headers``/``auth`` and are never logged."""
    return httpx.Client(
        base_url=base_url,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
        timeout=timeout,
        auth=auth,
        follow_redirects=False,
    )


def retry_after_seconds(response: httpx.Response, now: datetime | None = None) -> float | None:
    """The Retry-After header in seconds (delta-seconds or HTTP-date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def backoff_delay(failures: int, initial: float, longest: float, jitter: float) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: ``initial`` doubled each time up
    to ``longest``, less up to ``jitter`` of it at random, so a fleet of clients retrying at once
    spreads out instead of stampeding."""
    delay = min(longest, initial * 2 ** min(max(failures, 1) - 1, 30))
    return delay * (1 - jitter * random.random())


def error_for_status(
    response: httpx.Response,
    *,
    provider: str,
    region: str | None = None,
    message: str | None = None,
    code: str | None = None,
) -> ProviderError:
    """The typed error for an HTTP error status, when the body said nothing more specific."""
    status = response.status_code
    text = message or f"HTTP {status} from {response.request.method} {response.request.url.path}"
    kwargs = {"provider": provider, "region": region, "code": code or str(status)}
    if status in (401, 403):
        return AuthError(text, **kwargs)
    if status == 404:
        return NotFound(text, **kwargs)
    if status == 429:
        return Transient(text, retry_after=retry_after_seconds(response), **kwargs)
    if status >= 500 or status == 408:
        return Transient(text, retry_after=retry_after_seconds(response), **kwargs)
    if status == 402:  # payment required: the account cannot spend more (Vast, Lambda balance)
        return QuotaExceeded(text, **kwargs)
    return InvalidRequest(text, **kwargs)


def transport_error(exc: httpx.HTTPError, *, provider: str, region: str | None = None) -> Transient:
    """A timeout, reset or refused connection: the request may or may not have been done."""
    return Transient(f"{type(exc).__name__}: {exc}", provider=provider, region=region, code="transport")


def send(
    client: httpx.Client, method: str, url: str, *, provider: str, region: str | None = None, **kwargs: Any
) -> httpx.Response:
    """One request; a timeout, reset or refused connection becomes :func:`transport_error`.

    Status codes are the caller's to map: each provider hides its own error codes in its bodies."""
    try:
        return client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise transport_error(exc, provider=provider, region=region) from None


def malformed_is_transient(provider: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate adapter methods so a 200 whose JSON lacks what the API documents becomes Transient,
    never a KeyError escaping the adapter."""

    def decorate(method: Callable[_P, _R]) -> Callable[_P, _R]:
        @wraps(method)
        def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return method(*args, **kwargs)
            except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
                raise Transient(
                    f"malformed response in {method.__name__}: {type(exc).__name__}: {exc}",
                    provider=provider,
                    code="bad-response",
                ) from None

        return guarded

    return decorate


def json_decimal(value: Any) -> Decimal | None:
    """A JSON number (or numeric string) as a finite Decimal; None for null, booleans and junk."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None
