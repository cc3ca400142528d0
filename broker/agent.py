"""The node agent: reads each GPU's utilization through NVML and posts it to the API (does I/O).

``gpubroker agent`` runs on a GPU instance. Every ``--interval`` seconds it reads every GPU
(utilization, memory, power) through NVML (the ``nvidia-ml-py`` package, module ``pynvml``),
buffers the samples, and posts them in batches to ``POST /v1/utilization``. A failed post is
retried with exponential backoff while samples keep being read into a bounded buffer (the oldest
are dropped, with a warning, when it is full); a 429 waits as long as its ``Retry-After`` says.
A 401, 403 or 404 stops the agent: retrying cannot fix a wrong key, role or instance id.
With ``--cloud aws|gcp|azure`` a thread also watches the cloud's metadata service for a spot
preemption notice and relays it to the API once (``broker/agent_notices.py``).

The API key is sent as a bearer token and never logged.
"""

from __future__ import annotations

import itertools
import logging
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import httpx
import typer

from broker.agent_notices import CLOUDS, NoticeWatcher, metadata_source, start_watcher
from broker.clock import Clock, utc_now
from providers.http import backoff_delay, make_client, retry_after_seconds

_log = logging.getLogger(__name__)

EXIT_REFUSED = 2  # the API refused the key, role or instance id: a configuration error
EXIT_NO_GPU = 3  # nothing to report on this machine
UTILIZATION_PATH = "/v1/utilization"
MAX_RETRY_AFTER = 3600.0  # a longer Retry-After is taken as this (a misconfigured proxy, not a plan)
_MIB = 1024 * 1024


class NoGpu(Exception):
    """This machine has no GPU NVML can read: no driver, no library, or no device."""


class AgentStopped(Exception):
    """The API refused the agent in a way retrying cannot fix (401, 403, 404)."""


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU at one instant, as NVML reported it (None: the device does not support that counter)."""

    gpu_index: int
    gpu_util_pct: int
    memory_used_mib: int | None
    memory_total_mib: int | None
    power_watts: Decimal | None


class NvmlReader:
    """Reads every GPU through an NVML binding: the ``pynvml`` module, or a fake with its functions.

    ``open()`` raises :class:`NoGpu` when NVML cannot start or finds no device. A counter a device
    does not support (power on some boards, memory on unified-memory systems) reads as None; a
    GPU whose utilization cannot be read is left out of that round (with one warning).

    Memory is read with ``nvmlDeviceGetMemoryInfo_v2``, whose ``used`` leaves out what the driver
    reserves (about 480 MiB on an H100 80GB), as ``nvidia-smi`` does; v1's ``used`` counts that
    reservation, so an idle GPU would read as 480 MiB used. A driver or binding without v2 gets v1."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._handles: list[Any] = []
        self._open = False
        self._warned: set[tuple[int, str, str]] = set()
        self._memory_v2 = True  # until the driver or the binding says it has no v2

    def open(self) -> list[str]:
        """Start NVML and find the GPUs; their names, in index order."""
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError_LibraryNotFound:
            raise NoGpu("the NVIDIA driver library (libnvidia-ml) was not found: no NVIDIA driver") from None
        except nvml.NVMLError_DriverNotLoaded:
            raise NoGpu("the NVIDIA driver is not loaded") from None
        except nvml.NVMLError as exc:
            raise NoGpu(f"NVML could not start: {exc}") from None
        self._open = True
        try:
            count = nvml.nvmlDeviceGetCount()
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            names = [_text(nvml.nvmlDeviceGetName(h)) for h in self._handles]
        except nvml.NVMLError as exc:
            self.close()
            raise NoGpu(f"NVML could not list the GPUs: {exc}") from None
        if not self._handles:
            self.close()
            raise NoGpu("NVML found no GPU on this machine")
        return names

    def read(self) -> list[GpuReading]:
        """One reading of every GPU that answers."""
        readings = []
        for index, handle in enumerate(self._handles):
            try:
                util = int(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except self._nvml.NVMLError as exc:
                self._warn_once(index, "utilization", exc)
                continue
            memory = self._optional(index, "memory", lambda h=handle: self._memory_info(h))
            power_mw = self._optional(index, "power", lambda h=handle: self._nvml.nvmlDeviceGetPowerUsage(h))
            readings.append(
                GpuReading(
                    gpu_index=index,
                    gpu_util_pct=util,
                    memory_used_mib=int(memory.used) // _MIB if memory is not None else None,
                    memory_total_mib=int(memory.total) // _MIB if memory is not None else None,
                    power_watts=Decimal(int(power_mw)) / 1000 if power_mw is not None else None,
                )
            )
        return readings

    def close(self) -> None:
        if self._open:
            self._open = False
            self._handles = []
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                _log.debug("NVML shutdown failed: %s", exc)

    def __enter__(self) -> NvmlReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _memory_info(self, handle: Any) -> Any:
        nvml = self._nvml
        if self._memory_v2:
            too_old = (
                AttributeError,  # a binding without nvmlMemory_v2
                TypeError,  # a binding whose nvmlDeviceGetMemoryInfo takes no version
                nvml.NVMLError_FunctionNotFound,  # a driver without nvmlDeviceGetMemoryInfo_v2
                getattr(nvml, "NVMLError_ArgumentVersionMismatch", nvml.NVMLError_FunctionNotFound),
            )
            try:
                return nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
            except too_old as exc:
                _log.info("NVML has no v2 memory info (%s): memory used includes the driver's reserve", exc)
                self._memory_v2 = False
        return nvml.nvmlDeviceGetMemoryInfo(handle)

    def _optional(self, index: int, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except self._nvml.NVMLError_NotSupported:
            return None
        except self._nvml.NVMLError as exc:
            self._warn_once(index, what, exc)
            return None

    def _warn_once(self, index: int, what: str, exc: Exception) -> None:
        key = (index, what, type(exc).__name__)
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        _log.log(level, "GPU %d: cannot read %s: %s", index, what, exc)


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class UtilizationAgent:
    """The read-buffer-post loop. Time comes from ``clock`` and waiting goes through ``sleep`` (by
    default ``stop.wait``), so a test drives it with a fake clock; ``stop`` ends it."""

    def __init__(
        self,
        reader: NvmlReader,
        client: httpx.Client,
        instance_id: str,
        *,
        interval: float = 10.0,
        batch_size: int = 1000,
        buffer_limit: int = 20_000,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        jitter: float = 0.2,
        clock: Clock = utc_now,
        sleep: Callable[[float], object] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        if interval <= 0 or batch_size < 1 or buffer_limit < 1:
            raise ValueError("interval, batch_size and buffer_limit must be positive")
        self.reader = reader
        self.client = client
        self.instance_id = instance_id
        self.interval = interval
        self.batch_size = batch_size
        self.buffer_limit = buffer_limit
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.jitter = jitter
        self.clock = clock
        self.stop = stop if stop is not None else threading.Event()
        self._sleep = sleep if sleep is not None else self.stop.wait
        self.buffer: deque[dict[str, Any]] = deque()
        self.dropped = 0  # samples dropped because the buffer was full
        self.posted = 0  # samples the API has answered for (accepted or duplicate)
        self._failures = 0  # failed posts in a row
        self._not_before: datetime | None = None  # no post before this (backoff or Retry-After)
        self._wait = 0.0  # seconds the last failed post said to wait

    # --- one round ------------------------------------------------------------------------------
    def collect(self, at: datetime) -> int:
        """Read every GPU once, stamp the readings ``at`` and buffer them; how many were read."""
        readings = self.reader.read()
        stamp = at.isoformat()
        self.buffer.extend(
            {
                "instance_id": self.instance_id,
                "gpu_index": r.gpu_index,
                "at": stamp,
                "gpu_util_pct": str(r.gpu_util_pct),
                "memory_used_mib": r.memory_used_mib,
                "memory_total_mib": r.memory_total_mib,
                "power_watts": str(r.power_watts) if r.power_watts is not None else None,
            }
            for r in readings
        )
        overflow = len(self.buffer) - self.buffer_limit
        if overflow > 0:
            for _ in range(overflow):
                self.buffer.popleft()
            self.dropped += overflow
            _log.warning(
                "the sample buffer is full (%d samples; the API has not taken any lately): "
                "dropped the %d oldest (%d so far)",
                self.buffer_limit,
                overflow,
                self.dropped,
            )
        return len(readings)

    def flush(self) -> bool:
        """Post buffered samples, oldest first, in batches, until none are left or a post must wait.

        True when the buffer is empty. Raises :class:`AgentStopped` on 401, 403 and 404."""
        while self.buffer:
            batch = list(itertools.islice(self.buffer, self.batch_size))
            wait = self._post(batch)
            if wait is not None:
                self._wait = wait
                self._not_before = self.clock() + timedelta(seconds=wait)
                return False
            for _ in batch:
                self.buffer.popleft()
        self._not_before = None
        return True

    def may_post(self, now: datetime) -> bool:
        return self._not_before is None or now >= self._not_before

    # --- the loop -------------------------------------------------------------------------------
    def run(self, rounds: int | None = None) -> None:
        """Read every ``interval`` and post, until ``stop`` is set (or after ``rounds`` readings).

        On the way out the buffer gets one last post attempt; what is still unsent is reported.
        Raises :class:`AgentStopped` (at once, without that last attempt) on 401, 403 and 404."""
        step = timedelta(seconds=self.interval)
        done = 0
        next_read = self.clock()
        while not self.stop.is_set():
            now = self.clock()
            if now >= next_read:
                self.collect(now)
                done += 1
                next_read += step
                if next_read <= now:  # fell behind (a slow post): skip, don't burst
                    next_read = now + step
            if self.buffer and self.may_post(now):
                self.flush()
            if rounds is not None and done >= rounds:
                break
            wake, longest = next_read, self.interval
            if self.buffer and self._not_before is not None and self._not_before < next_read:
                wake, longest = self._not_before, self._wait
            delay = (wake - self.clock()).total_seconds()
            if delay > 0:
                # Bounded: a wall clock stepped backwards must not park the agent for hours.
                self._sleep(min(delay, longest))
        self._last_flush()

    def _last_flush(self) -> None:
        if not self.buffer:
            return
        self.flush()
        if self.buffer:
            _log.warning("stopping with %d samples the API has not taken", len(self.buffer))

    # --- one post -------------------------------------------------------------------------------
    def _post(self, batch: list[dict[str, Any]]) -> float | None:
        """Post one batch: None when done with it (stored, or rejected for good), else seconds to wait."""
        try:
            response = self.client.post(UTILIZATION_PATH, json={"samples": batch})
        except httpx.TransportError as exc:
            return self._failed(f"cannot reach the API ({type(exc).__name__}: {exc})")
        status = response.status_code
        if 200 <= status < 300:
            self._failures = 0
            self.posted += len(batch)
            body = _json(response)
            _log.debug(
                "posted %d samples: %s accepted, %s duplicates",
                len(batch),
                body.get("accepted"),
                body.get("duplicates"),
            )
            return None
        if status in (401, 403, 404):
            raise AgentStopped(_refusal(response))
        if status == 429:
            wait = retry_after_seconds(response, self.clock())
            if wait is None:
                return self._failed("the API is rate limiting (429)")
            wait = min(wait, MAX_RETRY_AFTER)
            _log.info("the API is rate limiting (429): waiting %.1f s as it asks", wait)
            return wait
        if status == 408 or status >= 500:
            return self._failed(f"the API answered {status}: {_detail(response)}")
        # Any other 4xx is about the batch itself (a 422, say): re-posting it can never succeed.
        _log.error(
            "the API rejected %d samples (%d: %s): dropping them", len(batch), status, _detail(response)
        )
        return None

    def _failed(self, why: str) -> float:
        self._failures += 1
        delay = backoff_delay(self._failures, self.backoff_initial, self.backoff_max, self.jitter)
        _log.warning("%s; retrying in %.1f s (%d samples buffered)", why, delay, len(self.buffer))
        return delay


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _detail(response: httpx.Response) -> str:
    body = _json(response)
    detail = body.get("detail") or body.get("title")
    return str(detail) if detail else response.reason_phrase or str(response.status_code)


def _refusal(response: httpx.Response) -> str:
    status, detail = response.status_code, _detail(response)
    if status == 401:
        return f"the API refused the key (401: {detail}); check --key / GPUBROKER_API_KEY"
    if status == 403:
        return f"the key may not post utilization (403: {detail}); it needs the operator role"
    return (
        f"the API answered 404 ({detail}); check --instance-id (an instance of the key's organization) "
        f"and --api ({response.request.url.scheme}://{response.request.url.netloc.decode()})"
    )


# --- the command ------------------------------------------------------------------------------------


def load_pynvml() -> Any:
    """The real NVML binding; :class:`NoGpu` when the nvidia-ml-py package is not installed."""
    try:
        import pynvml
    except ImportError:
        raise NoGpu(
            "the nvidia-ml-py package (module pynvml) is not installed: pip install nvidia-ml-py"
        ) from None
    return pynvml


def api_client(base_url: str, headers: Mapping[str, str]) -> httpx.Client:
    return make_client(base_url, headers=headers, timeout=httpx.Timeout(15.0, connect=5.0))


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (the loop finishes its round and posts what it has)."""

    def handle(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handle)
    except ValueError:  # not the main thread: the caller owns signals
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _configure_logging(level: str) -> None:
    # Only this module's logger is raised to ``level``: httpx/httpcore stay at the root's WARNING,
    # so request lines (and, at DEBUG, headers with the bearer key) are never printed.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    _log.setLevel(level.upper())


def register(
    app: typer.Typer,
    *,
    load_nvml: Callable[[], Any] = load_pynvml,
    client_factory: Callable[[str, Mapping[str, str]], httpx.Client] = api_client,
) -> None:
    """Add the ``agent`` command to a typer app. ``load_nvml`` and ``client_factory`` are the two
    edges (the NVML binding and the HTTP client); tests pass fakes of them."""

    @app.command("agent")
    def agent(
        api: Annotated[
            str,
            typer.Option(
                "--api", envvar="GPUBROKER_API_URL", help="The gpubroker API, e.g. https://broker:8000"
            ),
        ],
        key: Annotated[
            str,
            typer.Option(
                "--key",
                envvar="GPUBROKER_API_KEY",
                help="An operator API key (prefer the env var: arguments show in ps)",
            ),
        ],
        instance_id: Annotated[
            str,
            typer.Option(
                "--instance-id", envvar="GPUBROKER_INSTANCE_ID", help="This machine's gpubroker instance id"
            ),
        ],
        interval: Annotated[float, typer.Option(min=1.0, max=3600.0, help="Seconds between readings")] = 10.0,
        batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Most samples per post")] = 1000,
        buffer_limit: Annotated[
            int, typer.Option(min=1, max=1_000_000, help="Most unsent samples kept (the oldest go first)")
        ] = 20_000,
        rounds: Annotated[
            int, typer.Option(min=0, help="Stop after this many readings (0: run until stopped)")
        ] = 0,
        log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
        cloud: Annotated[
            str,
            typer.Option(
                envvar="GPUBROKER_AGENT_CLOUD",
                help="Watch this cloud's metadata service for a spot preemption notice and relay it: "
                "aws, gcp, azure or none",
            ),
        ] = "none",
        metadata_url: Annotated[
            str | None,
            typer.Option(envvar="GPUBROKER_METADATA_URL", help="The metadata service (default: the cloud's)"),
        ] = None,
        notice_interval: Annotated[
            float, typer.Option(min=0.1, max=60.0, help="Seconds between metadata checks for a notice")
        ] = 5.0,
    ) -> None:
        """Report this machine's GPU utilization to gpubroker every --interval seconds (NVML), and with
        --cloud relay the cloud's spot preemption notice the moment it appears.

        Exits 3 when there is no GPU to read, 2 when the API refuses the key, role or instance id."""
        _configure_logging(log_level)
        if cloud not in CLOUDS:
            typer.echo(f"error: --cloud must be one of {', '.join(CLOUDS)}, not {cloud!r}", err=True)
            raise typer.Exit(EXIT_REFUSED)
        try:
            reader = NvmlReader(load_nvml())
            names = reader.open()
        except NoGpu as exc:
            typer.echo(f"error: no GPU to report: {exc}", err=True)
            raise typer.Exit(EXIT_NO_GPU) from None
        stop = threading.Event()
        with reader, client_factory(api, {"Authorization": f"Bearer {key}"}) as client:
            loop = UtilizationAgent(
                reader,
                client,
                instance_id,
                interval=interval,
                batch_size=batch_size,
                buffer_limit=buffer_limit,
                stop=stop,
            )
            _log.info(
                "reporting %d GPU(s) (%s) of instance %s to %s every %g s",
                len(names),
                ", ".join(names),
                instance_id,
                api,
                interval,
            )
            source = metadata_source(cloud, metadata_url)
            thread: threading.Thread | None = None
            if source is not None:
                watcher = NoticeWatcher(source, client, instance_id, interval=notice_interval, stop=stop)
                thread = start_watcher(watcher)
                _log.info("watching the %s metadata service for a preemption notice", cloud)
            try:
                with _stop_on_signals(stop):
                    loop.run(rounds or None)
            except AgentStopped as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(EXIT_REFUSED) from None
            finally:
                if thread is not None and source is not None:
                    stop.set()
                    thread.join(timeout=10.0)
                    source.client.close()
        _log.info("stopped: %d samples posted, %d dropped", loop.posted, loop.dropped)


__all__ = [
    "EXIT_NO_GPU",
    "EXIT_REFUSED",
    "AgentStopped",
    "GpuReading",
    "NoGpu",
    "NvmlReader",
    "UtilizationAgent",
    "api_client",
    "load_pynvml",
    "register",
]
