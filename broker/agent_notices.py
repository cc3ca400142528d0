"""The node agent's preemption-notice watcher: polls the cloud's instance metadata service and relays
a spot reclaim notice to the API once (does I/O).

The 30 s to 2 min warning before a spot VM is reclaimed is only visible from inside the VM, so the
agent (``gpubroker agent --cloud aws|gcp|azure``) reads it every ``--notice-interval`` seconds:

* AWS (IMDSv2): ``PUT /latest/api/token`` (``X-aws-ec2-metadata-token-ttl-seconds``), then
  ``GET /latest/meta-data/spot/instance-action`` with ``X-aws-ec2-metadata-token``: 404 while no
  action is scheduled; 200 ``{"action": "terminate"|"stop"|"hibernate", "time": "...Z"}`` once
  one is (reclaim at ``time``).
* GCP: ``GET /computeMetadata/v1/instance/preempted`` with ``Metadata-Flavor: Google``: ``FALSE``,
  then ``TRUE`` (GCP gives about 30 s: reclaim at now + 30 s).
* Azure Scheduled Events: ``GET /metadata/scheduledevents?api-version=2020-07-01`` with
  ``Metadata: true``: ``{"DocumentIncarnation": n, "Events": [...]}``; an event with
  ``EventType: "Preempt"`` naming this VM in ``Resources`` is the notice (reclaim at ``NotBefore``).

The notice is posted once to ``POST /v1/instances/{id}/preemption-notice``; a failed post is retried
with exponential backoff, a 429 waits as its ``Retry-After`` says, and 401/403/404 stop the watcher
(the utilization loop reports those). The API key is sent by the shared client and never logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from broker.clock import Clock, utc_now
from providers.http import backoff_delay, retry_after_seconds

_log = logging.getLogger(__name__)

CLOUDS = ("none", "aws", "gcp", "azure")
METADATA_URLS = {
    "aws": "http://169.254.169.254",
    "gcp": "http://metadata.google.internal",
    "azure": "http://169.254.169.254",
}
AWS_TOKEN_TTL = 21600  # seconds, IMDSv2's maximum: one token a watcher's lifetime, near enough
GCP_NOTICE = timedelta(seconds=30)  # GCP documents ~30 s between the preempted flag and the stop
AZURE_API_VERSION = "2020-07-01"
MAX_RETRY_AFTER = 3600.0  # as the utilization loop: a longer Retry-After is a misconfiguration
_AZURE_HEADERS = {"Metadata": "true"}  # IMDS refuses a request without it
METADATA_TIMEOUT = httpx.Timeout(2.0)  # link-local: an answer takes milliseconds or never comes


def notice_path(instance_id: str) -> str:
    return f"/v1/instances/{instance_id}/preemption-notice"


class MetadataUnavailable(Exception):
    """The metadata service gave no usable answer this round (unreachable, a timeout, an odd reply)."""


@dataclass(frozen=True, slots=True)
class Notice:
    """A reclaim the cloud announced: seen ``at``, the VM goes at ``reclaim_at`` (None: not said)."""

    source: str
    at: datetime
    reclaim_at: datetime | None
    detail: str

    def body(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "reclaim_at": self.reclaim_at.isoformat() if self.reclaim_at else None,
            "source": self.source,
        }


class NoticeSource(Protocol):
    """One cloud's metadata service: ``check`` returns the notice, None when there is none yet, or
    raises :class:`MetadataUnavailable`."""

    name: str
    client: httpx.Client  # on the metadata service; the caller closes it

    def check(self, now: datetime) -> Notice | None: ...


def _get(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise MetadataUnavailable(f"{type(exc).__name__}: {exc}") from None


class AwsSpotNotice:
    """EC2 ``spot/instance-action`` through IMDSv2 (a session token first, renewed when refused)."""

    name = "aws"

    def __init__(self, client: httpx.Client, token_ttl: int = AWS_TOKEN_TTL) -> None:
        self.client = client
        self.token_ttl = token_ttl
        self._token: str | None = None
        self._token_until: datetime | None = None

    def _fresh_token(self, now: datetime) -> str:
        if self._token is not None and self._token_until is not None and now < self._token_until:
            return self._token
        response = _get(
            self.client,
            "PUT",
            "/latest/api/token",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl)},
        )
        if response.status_code != 200 or not response.text.strip():
            raise MetadataUnavailable(f"IMDSv2 token: HTTP {response.status_code}")
        self._token = response.text.strip()
        self._token_until = now + timedelta(seconds=self.token_ttl * 0.9)
        return self._token

    def check(self, now: datetime) -> Notice | None:
        response = self._instance_action(now)
        if response.status_code == 401:  # the token expired or was revoked: one new one, once
            self._token = None
            response = self._instance_action(now)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise MetadataUnavailable(f"spot/instance-action: HTTP {response.status_code}")
        try:
            body = response.json()
            action = str(body["action"])
            reclaim_at = datetime.fromisoformat(str(body["time"]).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError) as exc:
            raise MetadataUnavailable(f"spot/instance-action: unreadable body ({exc})") from None
        if reclaim_at.tzinfo is None:
            raise MetadataUnavailable(f"spot/instance-action: time without a zone ({body['time']})")
        return Notice(self.name, now, reclaim_at, f"spot instance-action {action} at {body['time']}")

    def _instance_action(self, now: datetime) -> httpx.Response:
        token = self._fresh_token(now)
        return _get(
            self.client,
            "GET",
            "/latest/meta-data/spot/instance-action",
            headers={"X-aws-ec2-metadata-token": token},
        )


class GcpPreempted:
    """GCE ``instance/preempted``: ``TRUE`` once the VM is being preempted."""

    name = "gcp"

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def check(self, now: datetime) -> Notice | None:
        response = _get(
            self.client,
            "GET",
            "/computeMetadata/v1/instance/preempted",
            headers={"Metadata-Flavor": "Google"},
        )
        if response.status_code != 200:
            raise MetadataUnavailable(f"instance/preempted: HTTP {response.status_code}")
        value = response.text.strip().upper()
        if value == "FALSE":
            return None
        if value != "TRUE":
            raise MetadataUnavailable(f"instance/preempted: unexpected {response.text[:40]!r}")
        return Notice(self.name, now, now + GCP_NOTICE, "instance/preempted is TRUE")


class AzureScheduledEvents:
    """Azure Scheduled Events: a ``Preempt`` event for this VM (its name, read once from IMDS; events
    of a whole availability set or scale-set placement group reach every VM in it)."""

    name = "azure"

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self._vm_name: str | None = None

    def _this_vm(self) -> str | None:
        if self._vm_name is None:
            try:
                response = _get(
                    self.client,
                    "GET",
                    "/metadata/instance/compute/name",
                    params={"api-version": "2021-02-01", "format": "text"},
                    headers=_AZURE_HEADERS,
                )
            except MetadataUnavailable:
                return None
            if response.status_code == 200 and response.text.strip():
                self._vm_name = response.text.strip()
        return self._vm_name

    def check(self, now: datetime) -> Notice | None:
        response = _get(
            self.client,
            "GET",
            "/metadata/scheduledevents",
            params={"api-version": AZURE_API_VERSION},
            headers=_AZURE_HEADERS,
        )
        if response.status_code != 200:
            raise MetadataUnavailable(f"scheduledevents: HTTP {response.status_code}")
        try:
            events = response.json()["Events"]
            preempts = [e for e in events if e.get("EventType") == "Preempt"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MetadataUnavailable(f"scheduledevents: unreadable body ({exc})") from None
        if not preempts:
            return None
        vm = self._this_vm()
        for event in preempts:
            resources = event.get("Resources") or []
            if vm is not None and resources and vm not in resources:
                continue  # another VM of the set
            return Notice(
                self.name,
                now,
                _http_date(event.get("NotBefore")),
                f"scheduled event {event.get('EventId')} Preempt ({event.get('EventStatus')})",
            )
        return None


def _http_date(value: object) -> datetime | None:
    """``NotBefore`` is an RFC 1123 date ("Mon, 19 Sep 2016 18:29:47 GMT"), or empty once Started."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def metadata_source(cloud: str, base_url: str | None = None) -> NoticeSource | None:
    """The notice source for ``cloud`` (None for "none"), on its metadata service or ``base_url``."""
    if cloud == "none":
        return None
    if cloud not in METADATA_URLS:
        raise ValueError(f"unknown cloud {cloud!r}: one of {', '.join(CLOUDS)}")
    # No proxy: the metadata service is link-local; HTTP(S)_PROXY from the environment must not apply.
    client = httpx.Client(
        base_url=base_url or METADATA_URLS[cloud],
        timeout=METADATA_TIMEOUT,
        trust_env=False,
        follow_redirects=False,
    )
    sources: dict[str, Callable[[httpx.Client], NoticeSource]] = {
        "aws": AwsSpotNotice,
        "gcp": GcpPreempted,
        "azure": AzureScheduledEvents,
    }
    return sources[cloud](client)


class NoticeWatcher:
    """Polls ``source`` every ``interval`` seconds until it reports a notice, posts that notice to
    the API once (retrying until the API has it), and ends. ``stop`` ends it early; time comes from
    ``clock`` and waiting goes through ``sleep`` (default ``stop.wait``), so tests drive it."""

    def __init__(
        self,
        source: NoticeSource,
        client: httpx.Client,
        instance_id: str,
        *,
        interval: float = 5.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        jitter: float = 0.2,
        clock: Clock = utc_now,
        sleep: Callable[[float], object] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.source = source
        self.client = client
        self.instance_id = instance_id
        self.interval = interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.jitter = jitter
        self.clock = clock
        self.stop = stop if stop is not None else threading.Event()
        self._sleep = sleep if sleep is not None else self.stop.wait
        self.notice: Notice | None = None  # the notice seen, once seen
        self.relayed = False  # the API has it (or refused it for good)
        self.polls = 0
        self._failures = 0
        self._unavailable: str | None = None  # the last metadata failure, to log each kind once

    def poll(self) -> Notice | None:
        """Ask the metadata service once; a failure is logged (once per kind) and reads as no notice."""
        self.polls += 1
        try:
            notice = self.source.check(self.clock())
        except MetadataUnavailable as exc:
            why = str(exc)
            level = logging.DEBUG if why == self._unavailable else logging.WARNING
            _log.log(level, "the %s metadata service did not answer: %s", self.source.name, why)
            self._unavailable = why
            return None
        self._unavailable = None
        if notice is not None:
            _log.warning(
                "preemption notice from %s: %s (reclaim at %s)",
                notice.source,
                notice.detail,
                notice.reclaim_at.isoformat() if notice.reclaim_at else "any moment",
            )
        return notice

    def post(self, notice: Notice) -> float | None:
        """Post ``notice``: None when done (the API has it, or refused it for good), else seconds to wait."""
        try:
            response = self.client.post(notice_path(self.instance_id), json=notice.body())
        except httpx.TransportError as exc:
            return self._failed(f"cannot reach the API ({type(exc).__name__}: {exc})")
        status = response.status_code
        if 200 <= status < 300:
            body = _json(response)
            _log.info("the API has the preemption notice: %s", body.get("detail", status))
            return None
        if status == 429:
            wait = retry_after_seconds(response, self.clock())
            if wait is None:
                return self._failed("the API is rate limiting (429)")
            return min(wait, MAX_RETRY_AFTER)
        if status == 408 or status >= 500:
            return self._failed(f"the API answered {status}")
        # 401/403/404 (key, role, instance id) and 422 cannot be fixed by posting again.
        _log.error("the API refused the preemption notice (%d: %s): not relayed", status, _detail(response))
        return None

    def run(self, rounds: int | None = None) -> Notice | None:
        """Poll until a notice is relayed, ``stop`` is set, or ``rounds`` polls found nothing.

        Stopped before relaying, it looks and posts once more: the agent is most often stopped by
        the shutdown the reclaim itself starts (GCP's ACPI soft-off comes with the preempted flag)."""
        while not self.stop.is_set():
            if self.notice is None:
                self.notice = self.poll()
                if self.notice is None:
                    if rounds is not None and self.polls >= rounds:
                        return None
                    self._sleep(self.interval)
                    continue
            wait = self.post(self.notice)
            if wait is None:
                self.relayed = True
                return self.notice
            self._sleep(wait)
        if self.notice is None:
            self.notice = self.poll()
        if self.notice is not None and not self.relayed:
            self.relayed = self.post(self.notice) is None
        return self.notice

    def _failed(self, why: str) -> float:
        self._failures += 1
        delay = backoff_delay(self._failures, self.backoff_initial, self.backoff_max, self.jitter)
        _log.warning("%s; posting the preemption notice again in %.1f s", why, delay)
        return delay


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _detail(response: httpx.Response) -> str:
    body = _json(response)
    return str(body.get("detail") or body.get("title") or response.reason_phrase or response.status_code)


def start_watcher(watcher: NoticeWatcher) -> threading.Thread:
    """Run ``watcher`` on a daemon thread (it ends with its ``stop`` event or once it has relayed)."""

    def run() -> None:
        try:
            watcher.run()
        except Exception:  # the utilization loop must outlive a watcher bug
            _log.exception("the preemption-notice watcher failed")

    thread = threading.Thread(target=run, name="preemption-notice-watcher", daemon=True)
    thread.start()
    return thread


__all__ = [
    "CLOUDS",
    "GCP_NOTICE",
    "METADATA_URLS",
    "AwsSpotNotice",
    "AzureScheduledEvents",
    "GcpPreempted",
    "MetadataUnavailable",
    "Notice",
    "NoticeSource",
    "NoticeWatcher",
    "metadata_source",
    "notice_path",
    "start_watcher",
]
