"""The one resilience layer around every provider adapter (does I/O through the adapter it wraps).

Adapters make single attempts. Here, once for all of them:

* a **timeout** per call (the call runs on a worker thread; a launch that times out may still
  happen, which is why launches are idempotent);
* **retries** with jittered exponential backoff (tenacity) for ``Transient`` errors only,
  honouring the provider's Retry-After;
* a **circuit breaker** per provider + region: it opens after ``breaker_threshold`` consecutive
  failures, refuses calls with ``ProviderUnavailable`` while open, and half-opens after
  ``breaker_cooldown`` seconds to let one trial call through;
* a **token bucket** per provider, so a backlog after a restart cannot stampede a provider API;
* **metrics** per operation: calls, outcomes by error type, latency.

Answers such as InsufficientCapacity or NotFound are not failures of the provider: they neither
retry nor trip the breaker.
"""

from __future__ import annotations

import concurrent.futures
import enum
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from broker.core.errors import ProviderError, ProviderUnavailable, Transient
from broker.core.ports import Capabilities, Instance, LaunchRequest, Provider, ProviderStatus
from broker.core.types import Offer

_log = logging.getLogger(__name__)
T = TypeVar("T")
GLOBAL_REGION = "*"


@dataclass(frozen=True, slots=True)
class ResiliencePolicy:
    """Knobs of the resilience layer; the defaults suit cloud control-plane APIs."""

    timeout_seconds: float = 60.0
    max_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    rate_per_second: float = 5.0
    burst: int = 10
    rate_wait_max: float = 30.0
    max_concurrency: int = 8


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Consecutive-failure breaker with a cool-down and a single half-open trial."""

    def __init__(self, key: str, threshold: int, cooldown: float, monotonic: Callable[[], float]) -> None:
        self.key = key
        self.threshold = threshold
        self.cooldown = cooldown
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.last_error: str | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self._monotonic() - self.opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def before_call(self, provider: str, region: str | None) -> None:
        with self._lock:
            state = self.state
            if state is BreakerState.CLOSED:
                return
            if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True  # one trial call; the others wait for its verdict
                return
            assert self.opened_at is not None
            remaining = max(self.cooldown - (self._monotonic() - self.opened_at), 0.0)
            raise ProviderUnavailable(
                f"circuit breaker open after {self.consecutive_failures} failures "
                f"(last: {self.last_error}); next try in {remaining:.0f}s",
                provider=provider,
                region=region,
                code="breaker-open",
                retry_after=remaining,
            )

    def record_success(self) -> None:
        with self._lock:
            self.consecutive_failures = 0
            self.opened_at = None
            self._trial_in_flight = False

    def record_failure(self, error: ProviderError) -> None:
        with self._lock:
            self.consecutive_failures += 1
            self.last_error = str(error)
            if self._trial_in_flight or self.consecutive_failures >= self.threshold:
                if self.opened_at is None or self._trial_in_flight:
                    _log.warning("circuit breaker %s opened: %s", self.key, error)
                self.opened_at = self._monotonic()
            self._trial_in_flight = False


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; a call takes one or waits (up to a limit)."""

    def __init__(
        self, rate: float, burst: int, monotonic: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = monotonic()
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        """Take a token if one is there now; never waits (the launch ramp skips a round instead)."""
        with self._lock:
            now = self._monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

    def acquire(self, max_wait: float, *, provider: str) -> float:
        """Take a token, sleeping for it if needed; returns the seconds waited."""
        with self._lock:
            now = self._monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1  # reserve now, so concurrent callers queue behind each other
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
            if wait > max_wait:
                self._tokens += 1
                raise Transient(
                    f"client-side rate limit: {wait:.1f}s until the next call slot",
                    provider=provider,
                    code="rate-limited",
                    retry_after=wait,
                )
        if wait:
            self._sleep(wait)
        return wait


@dataclass
class OperationStats:
    calls: int = 0
    attempts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    total_seconds: float = 0.0
    max_seconds: float = 0.0


class ResilientProvider:
    """A provider wrapped in the resilience layer; it is itself a :class:`Provider`."""

    def __init__(
        self,
        provider: Provider,
        policy: ResiliencePolicy | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = provider
        self.policy = policy or ResiliencePolicy()
        self._monotonic = monotonic
        self._sleep = sleep
        self._bucket = TokenBucket(self.policy.rate_per_second, self.policy.burst, monotonic, sleep)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.policy.max_concurrency, thread_name_prefix=f"provider-{provider.name}"
        )
        self.stats: dict[str, OperationStats] = {}
        self.last_error: str | None = None

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def breaker(self, region: str | None = None) -> CircuitBreaker:
        key = region or GLOBAL_REGION
        with self._lock:
            if key not in self._breakers:
                self._breakers[key] = CircuitBreaker(
                    f"{self.name}/{key}",
                    self.policy.breaker_threshold,
                    self.policy.breaker_cooldown,
                    self._monotonic,
                )
            return self._breakers[key]

    def breakers(self) -> dict[str, CircuitBreaker]:
        with self._lock:
            return dict(self._breakers)

    # --- Provider ------------------------------------------------------------------------------
    def list_offers(self, *, regions: Sequence[str] | None = None) -> list[Offer]:
        return self._call("list_offers", None, lambda: self.inner.list_offers(regions=regions))

    def launch(self, request: LaunchRequest) -> Instance:
        return self._call("launch", request.region, lambda: self.inner.launch(request))

    def get_instance(self, instance_id: str, *, region: str) -> Instance | None:
        return self._call("get_instance", region, lambda: self.inner.get_instance(instance_id, region=region))

    def list_instances(self, *, regions: Sequence[str] | None = None) -> list[Instance]:
        return self._call("list_instances", None, lambda: self.inner.list_instances(regions=regions))

    def terminate(self, instance_id: str, *, region: str) -> None:
        self._call("terminate", region, lambda: self.inner.terminate(instance_id, region=region))

    def check(self) -> ProviderStatus:
        """The adapter's own check (it never raises), unless the breaker refuses the call."""
        try:
            status = self._call("check", None, self.inner.check, retry=False)
        except ProviderError as exc:
            return ProviderStatus(self.name, configured=True, reachable=False, detail=str(exc))
        if status.configured and not status.reachable:  # a failed health check is a provider failure
            self.breaker().record_failure(Transient(status.detail or "check failed", provider=self.name))
            self.last_error = status.detail or "check failed"
        return status

    # --- the layer -----------------------------------------------------------------------------
    def _wait(self, state: tenacity.RetryCallState) -> float:
        # Exponential backoff capped at backoff_max, plus up to one backoff_initial of jitter, so
        # clients that failed together do not retry together.
        exponential = self.policy.backoff_initial * 2 ** (state.attempt_number - 1)
        backoff = min(exponential, self.policy.backoff_max) + random.uniform(0, self.policy.backoff_initial)
        error = state.outcome.exception() if state.outcome else None
        hint = getattr(error, "retry_after", None) or 0.0
        return max(backoff, min(hint, self.policy.backoff_max * 6))

    def _call(self, operation: str, region: str | None, fn: Callable[[], T], *, retry: bool = True) -> T:
        stats = self.stats.setdefault(operation, OperationStats())
        stats.calls += 1
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.policy.max_attempts if retry else 1),
            wait=self._wait,
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, Transient) and not isinstance(e, ProviderUnavailable)
            ),
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._attempt(operation, region, fn, stats)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _attempt(self, operation: str, region: str | None, fn: Callable[[], T], stats: OperationStats) -> T:
        breaker = self.breaker(region)
        breaker.before_call(self.name, region)
        self._bucket.acquire(self.policy.rate_wait_max, provider=self.name)
        stats.attempts += 1
        started = self._monotonic()
        try:
            future = self._executor.submit(fn)
            try:
                result = future.result(timeout=self.policy.timeout_seconds)
            except concurrent.futures.TimeoutError:
                raise Transient(
                    f"{operation} timed out after {self.policy.timeout_seconds:g}s",
                    provider=self.name,
                    region=region,
                    code="timeout",
                ) from None
        except Transient as exc:
            self._record(stats, started, type(exc).__name__, exc)
            breaker.record_failure(exc)
            raise
        except ProviderError as exc:  # an answer (no capacity, not found, ...): the provider works
            self._record(stats, started, type(exc).__name__, None)
            breaker.record_success()
            raise
        except Exception as exc:  # an adapter bug let a raw exception out: contain it, loudly
            _log.exception("%s.%s raised an unmapped %s", self.name, operation, type(exc).__name__)
            error = Transient(
                f"unexpected {type(exc).__name__} in {operation}",
                provider=self.name,
                region=region,
                code="unmapped",
            )
            self._record(stats, started, "unmapped", error)
            breaker.record_failure(error)
            raise error from exc
        self._record(stats, started, "ok", None)
        breaker.record_success()
        return result

    def _record(
        self, stats: OperationStats, started: float, outcome: str, error: ProviderError | None
    ) -> None:
        elapsed = self._monotonic() - started
        stats.outcomes[outcome] += 1
        stats.total_seconds += elapsed
        stats.max_seconds = max(stats.max_seconds, elapsed)
        if error is not None:
            self.last_error = str(error)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
