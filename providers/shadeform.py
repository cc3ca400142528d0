"""Shadeform marketplace adapter over its documented REST API v1 (does I/O: HTTPS to api.shadeform.ai).

Shadeform resells ~15 GPU clouds through one API. API facts this module depends on, checked
against Shadeform's OpenAPI spec (shadeform/docs ``openapi.yaml``; the newer one the CLI is
generated from, shadeform/shadeform-cli ``.speakeasy/out.openapi.yaml``), its guides
(``getting-started/quickstart.mdx``, ``guides/spotinstances.mdx``, ``api-reference/authentication.mdx``)
and SkyPilot's ``sky/provision/shadeform``:

* Base URL ``https://api.shadeform.ai/v1``; the key goes in the ``X-API-KEY`` header.
* ``GET /instances/types`` → ``{"instance_types": [{cloud, shade_instance_type,
  cloud_instance_type, configuration{memory_in_gb, storage_in_gb, vcpus, num_gpus, gpu_type,
  interconnect, nvlink, vram_per_gpu_in_gb, ...}, hourly_price (integer cents), deployment_type,
  availability[{region, available, display_name, rental_type, hourly_price?}], boot_time}]}``.
  Each availability entry is one rental type: ``on_demand`` at the type's ``hourly_price``, or
  ``spot`` with its own ``hourly_price`` as a decimal string in dollars.
* ``POST /instances/create {cloud, region, shade_instance_type, shade_cloud, name, rental_type,
  os?, ssh_key_id?, tags[str]}`` → ``{id, cloud_assigned_id?}``; creation is asynchronous.
  No idempotency token: launch looks up our deterministic name in ``GET /instances`` first.
* ``GET /instances`` → ``{"instances": [...]}`` (every non-deleted instance, "deleting"
  included); ``GET /instances/{id}/info``; ``POST /instances/{id}/delete`` (200, empty body).
* Spot: a reclaimed instance moves to ``deleting`` (then ``deleted``) with ``status_details:
  "preempted"``; there is no advance notice.
* Errors: only the 401 body is documented (``{"message": "Invalid API key"}``); there are no
  error codes, so :func:`error_from_response` maps by HTTP status plus the message text for
  out-of-capacity answers (the quickstart: "an error that implies that the selected instance is
  out of capacity") and wallet-balance answers.

Offer encoding: the underlying cloud stays visible in ``instance_type`` as
``"<cloud>:<shade_instance_type>"`` (``"hyperstack:H100_sxm5x8"``): the same Shade type on two
clouds is two products at two prices. ``region`` is Shadeform's region name as is; the Offer's
``cloud`` is always "shadeform".
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ParamSpec, TypeVar

import httpx

from broker.clock import utc_now
from broker.core.errors import (
    AuthError,
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
    ProviderError,
    QuotaExceeded,
    Transient,
)
from broker.core.ports import (
    NAME_PREFIX,
    TAG_INSTANCE_ID,
    TAG_MANAGED,
    Capabilities,
    Instance,
    InstanceState,
    LaunchIdempotency,
    LaunchRequest,
    ProviderStatus,
    owned_instance_id,
)
from broker.core.types import Availability, CapacityType, Offer
from pricing.normalize import canonical_accelerator
from providers.http import error_for_status, make_client, malformed_is_transient, retry_after_seconds, send

log = logging.getLogger(__name__)

PROVIDER = "shadeform"
DEFAULT_BASE_URL = "https://api.shadeform.ai/v1"
OFFER_SOURCE = "shadeform:instances-types"
TYPE_SEPARATOR = ":"

# Shadeform instance status -> ours. "deleting" already stops billing and cannot be undone.
STATE_MAP: dict[str, InstanceState] = {
    "creating": InstanceState.PENDING,
    "pending_provider": InstanceState.PENDING,
    "pending": InstanceState.PENDING,
    "active": InstanceState.RUNNING,
    "error": InstanceState.FAILED,
    "deleting": InstanceState.TERMINATED,
    "deleted": InstanceState.TERMINATED,
}
PREEMPTED_DETAIL = "preempted"  # status_details of a reclaimed spot instance

# rental_type (availability entries, create requests, rental_terms) <-> our capacity types.
RENTAL_TYPES: dict[str, CapacityType] = {
    "on_demand": CapacityType.ON_DEMAND,
    "spot": CapacityType.SPOT,
    "commitment": CapacityType.RESERVED,
}

# Shadeform sends no error codes: HTTP status first (providers.http.error_for_status), refined by
# the message of a 4xx. The "code" on our error is the pattern's name or the status.
MESSAGE_ERRORS: tuple[tuple[str, re.Pattern[str], type[ProviderError]], ...] = (
    (
        "out-of-capacity",
        re.compile(
            r"out of (capacity|stock)|insufficient capacity|no (available )?capacity|sold out"
            r"|not (currently )?available|unavailable",
            re.IGNORECASE,
        ),
        InsufficientCapacity,
    ),
    (
        "insufficient-balance",
        re.compile(r"insufficient (funds|balance|credit)|wallet|top up|balance too low", re.IGNORECASE),
        QuotaExceeded,
    ),
)
_MESSAGE_STATUSES = frozenset({400, 402, 409, 422})
_GPU_MEMORY_SUFFIX = re.compile(r"^(?P<model>.+?)_(?P<gb>\d+)GB?$", re.IGNORECASE)


def accelerator_name(configuration: Mapping[str, Any]) -> str:
    """Our GPU model for a Shadeform ``configuration``.

    ``gpu_type`` is "H100", "A6000", "A100_80G", ...: a memory suffix is dropped, except that
    an 80 GB A100 stays "A100-80GB" (users choose between the 40 and 80 GB parts).
    """
    gpu = str(configuration.get("gpu_type", "")).strip().upper()
    match = _GPU_MEMORY_SUFFIX.match(gpu)
    model = (match["model"] if match else gpu).replace("_", "-")  # "H100_NVL" -> "H100-NVL"
    vram = configuration.get("vram_per_gpu_in_gb")
    if not isinstance(vram, int) and match:
        vram = int(match["gb"])
    if model == "A100" and isinstance(vram, int) and vram >= 80:
        model = "A100-80GB"
    return canonical_accelerator(model)


def _message(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or None
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return value["message"]
    return None


def error_from_response(
    response: httpx.Response, *, region: str | None = None, launching: bool = False
) -> ProviderError:
    """The typed error for a Shadeform error response (status, refined by a 4xx message)."""
    status = response.status_code
    message = _message(response)
    if status == 429:
        return Transient(
            message or "rate limited (HTTP 429)",
            provider=PROVIDER,
            region=region,
            code="429",
            retry_after=retry_after_seconds(response),
        )
    if status in _MESSAGE_STATUSES and message:
        for code, pattern, kind in MESSAGE_ERRORS:
            if pattern.search(message):
                return kind(message, provider=PROVIDER, region=region, code=code)
    error = error_for_status(response, provider=PROVIDER, region=region, message=message)
    if launching and isinstance(error, NotFound):
        # A 404 on create names something we sent (type, region, SSH key): a bad request.
        return InvalidRequest(error.message, provider=PROVIDER, region=region, code=error.code)
    return error


def split_instance_type(instance_type: str) -> tuple[str, str]:
    """``"hyperstack:H100_sxm5x8"`` -> ("hyperstack", "H100_sxm5x8")."""
    cloud, sep, shade_type = instance_type.partition(TYPE_SEPARATOR)
    if not sep or not cloud or not shade_type:
        raise InvalidRequest(
            f"Shadeform instance types are '<cloud>:<shade_instance_type>', got {instance_type!r}",
            provider=PROVIDER,
            code="bad-instance-type",
        )
    return cloud, shade_type


_P = ParamSpec("_P")
_R = TypeVar("_R")


_malformed_is_transient = malformed_is_transient(PROVIDER)


class ShadeformProvider:
    """The Shadeform adapter (a marketplace: one API, many underlying clouds). Single attempts."""

    name = PROVIDER

    def __init__(
        self,
        api_key: str,
        *,
        ssh_key_id: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        regions: Sequence[str] = (),
        clock: Callable[[], datetime] = utc_now,
        timeout: httpx.Timeout | float | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Shadeform API key is required")
        self._ssh_key_id = ssh_key_id
        self._regions = tuple(regions)
        self._clock = clock
        kwargs: dict[str, Any] = {"headers": {"X-API-KEY": api_key}}
        if timeout is not None:
            kwargs["timeout"] = timeout
        self._client = make_client(base_url.rstrip("/"), **kwargs)
        self.capabilities = Capabilities(
            capacity_types=frozenset({CapacityType.ON_DEMAND, CapacityType.SPOT}),
            reservations=False,  # commitments are arranged with sales, not through the API
            interruption_notice_seconds=None,  # "Shadeform may reclaim the capacity at any time"
            availability_signal=True,
            live_prices=True,
            launch_idempotency=LaunchIdempotency.LOOKUP_FIRST,
            regions=self._regions,
        )

    def __repr__(self) -> str:  # never show the key
        return f"ShadeformProvider(base_url={str(self._client.base_url)!r}, regions={self._regions!r})"

    def close(self) -> None:
        self._client.close()

    # --- HTTP ---------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        region: str | None = None,
        launching: bool = False,
    ) -> Any:  # the API's JSON (None for an empty 200)
        response = send(self._client, method, path, provider=PROVIDER, region=region, json=body)
        if response.status_code >= 400:
            raise error_from_response(response, region=region, launching=launching)
        if not response.content.strip():
            return None  # delete answers 200 with an empty body
        try:
            return response.json()
        except ValueError:
            raise Transient(
                f"unparseable response to {method} {path}", provider=PROVIDER, region=region, code="bad-json"
            ) from None

    # --- offers -------------------------------------------------------------------------------
    @_malformed_is_transient
    def list_offers(self, *, regions: Sequence[str] | None = None) -> list[Offer]:
        """One offer per (cloud, Shade type, region, rental type) availability entry."""
        payload = self._call("GET", "/instances/types")
        observed_at = self._clock()
        wanted = set(regions or self._regions)
        offers: list[Offer] = []
        for itype in _items(payload, "instance_types"):
            config = itype.get("configuration") or {}
            count = config.get("num_gpus")
            if not isinstance(count, int) or count <= 0:
                continue  # CPU-only types
            instance_type = f"{itype['cloud']}{TYPE_SEPARATOR}{itype['shade_instance_type']}"
            accelerator = accelerator_name(config)
            for entry in itype.get("availability") or []:
                region = entry.get("region")
                if not region or (wanted and region not in wanted):
                    continue
                capacity = RENTAL_TYPES.get(entry.get("rental_type") or "on_demand")
                if capacity is CapacityType.ON_DEMAND:
                    price = _cents(itype.get("hourly_price"))
                elif capacity is CapacityType.SPOT:
                    price = _dollars(entry.get("hourly_price"))
                else:
                    continue
                if price is None:
                    continue
                offers.append(
                    Offer(
                        cloud=PROVIDER,
                        region=region,
                        zone=None,
                        instance_type=instance_type,
                        accelerator=accelerator,
                        accelerator_count=count,
                        vcpus=_number(config.get("vcpus")),
                        memory_gib=_number(config.get("memory_in_gb")),  # Shadeform says GB
                        capacity_type=capacity,
                        price_per_hour=price,
                        currency="USD",
                        source=OFFER_SOURCE,
                        observed_at=observed_at,
                        availability=Availability.AVAILABLE
                        if entry.get("available")
                        else Availability.UNAVAILABLE,
                    )
                )
        return offers

    # --- instances ----------------------------------------------------------------------------
    def _raw_instances(self, region: str | None = None) -> list[dict[str, Any]]:
        return _items(self._call("GET", "/instances", region=region), "instances")

    def _find(self, instance_id: str, region: str | None = None) -> dict[str, Any] | None:
        for raw in self._raw_instances(region):
            if _our_id(raw) == instance_id:
                return raw
        return None

    @_malformed_is_transient
    def launch(self, request: LaunchRequest) -> Instance:
        rental_type = {CapacityType.ON_DEMAND: "on_demand", CapacityType.SPOT: "spot"}.get(
            request.capacity_type
        )
        if rental_type is None:
            raise InvalidRequest(
                "Shadeform's API launches on-demand and spot instances only",
                provider=PROVIDER,
                region=request.region,
                code="unsupported-capacity-type",
            )
        cloud, shade_type = split_instance_type(request.instance_type)
        # No idempotency token: our deterministic name is the key, so look for it first.
        existing = self._find(request.instance_id, request.region)
        if existing is not None:
            return self._instance(existing)
        body: dict[str, Any] = {
            "cloud": cloud,
            "region": request.region,
            "shade_instance_type": shade_type,
            "shade_cloud": True,  # launch into Shadeform's accounts (required for spot)
            "name": request.name,
            "rental_type": rental_type,
            "tags": _tags(request),
        }
        if request.image:
            body["os"] = request.image  # one of the type's configuration.os_options
        if self._ssh_key_id:
            body["ssh_key_id"] = self._ssh_key_id  # else the account's default key
        created = self._call("POST", "/instances/create", body=body, region=request.region, launching=True)
        if not isinstance(created, dict) or not created.get("id"):
            raise Transient(
                "create answered without an instance id",
                provider=PROVIDER,
                region=request.region,
                code="bad-json",
            )
        log.info(
            "shadeform: created %s as %s on %s/%s", request.instance_id, created["id"], cloud, request.region
        )
        return Instance(
            provider=PROVIDER,
            instance_id=request.instance_id,
            provider_instance_id=str(created["id"]),
            instance_type=request.instance_type,
            region=request.region,
            zone=None,
            capacity_type=request.capacity_type,
            state=InstanceState.PENDING,  # creation is asynchronous: "creating"
            launched_at=self._clock(),
        )

    @_malformed_is_transient
    def get_instance(self, instance_id: str, *, region: str) -> Instance | None:
        raw = self._find(instance_id, region)
        return self._instance(raw) if raw is not None else None

    @_malformed_is_transient
    def list_instances(self, *, regions: Sequence[str] | None = None) -> list[Instance]:
        instances = [self._instance(raw) for raw in self._raw_instances() if _our_id(raw)]
        if regions:
            instances = [i for i in instances if i.region in set(regions)]
        return instances

    @_malformed_is_transient
    def terminate(self, instance_id: str, *, region: str) -> None:
        raw = self._find(instance_id, region)
        if raw is None or raw.get("status") in ("deleting", "deleted"):
            return  # gone or going: done
        try:
            self._call("POST", f"/instances/{raw['id']}/delete", region=region)
        except NotFound:
            return
        log.info("shadeform: deleting %s (%s)", instance_id, raw["id"])

    def check(self) -> ProviderStatus:
        try:
            self._call("GET", "/instances")
        except AuthError as exc:
            return ProviderStatus(PROVIDER, configured=False, reachable=True, detail=str(exc))
        except ProviderError as exc:
            return ProviderStatus(PROVIDER, configured=True, reachable=False, detail=str(exc))
        return ProviderStatus(PROVIDER, configured=True, reachable=True, detail="ok")

    def _instance(self, raw: Mapping[str, Any]) -> Instance:
        status = str(raw.get("status", ""))
        details = raw.get("status_details") or None
        state = STATE_MAP.get(status, InstanceState.UNKNOWN)
        if details == PREEMPTED_DETAIL and state is InstanceState.TERMINATED:
            state = InstanceState.PREEMPTED
        terms = raw.get("rental_terms") or {}
        price = _dollars(terms.get("hourly_price"))
        if price is None:
            price = _cents(raw.get("hourly_price"))
        return Instance(
            provider=PROVIDER,
            instance_id=_our_id(raw) or "",
            provider_instance_id=str(raw["id"]),
            instance_type=f"{raw.get('cloud', '')}{TYPE_SEPARATOR}{raw.get('shade_instance_type', '')}",
            region=str(raw.get("region", "")),
            zone=None,
            capacity_type=RENTAL_TYPES.get(terms.get("rental_type") or "on_demand", CapacityType.ON_DEMAND),
            state=state,
            launched_at=_timestamp(raw.get("created_at")),
            state_reason=details,
            price_per_hour=price,
            public_ip=raw.get("ip") or None,
        )


def _items(payload: object, key: str) -> list[dict[str, Any]]:
    items = payload.get(key) if isinstance(payload, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _cents(value: object) -> Decimal | None:
    return Decimal(value) / 100 if isinstance(value, int) and not isinstance(value, bool) else None


def _dollars(value: object) -> Decimal | None:
    if not isinstance(value, str | int):
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        return None
    return price if price.is_finite() and price >= 0 else None


def _number(value: object) -> Decimal | None:
    return Decimal(str(value)) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _tags(request: LaunchRequest) -> list[str]:
    """Shadeform tags are plain strings: ours as ``key=value``."""
    tags = [f"{TAG_MANAGED}=true", f"{TAG_INSTANCE_ID}={request.instance_id}"]
    tags += [f"{k}={v}" for k, v in sorted(request.labels.items()) if k not in (TAG_MANAGED, TAG_INSTANCE_ID)]
    return tags


def _our_id(raw: Mapping[str, Any]) -> str | None:
    """Our instance id from the name (primary) or our tag (instances renamed since)."""
    found = owned_instance_id(raw.get("name"))
    if found:
        return found
    prefix = f"{TAG_INSTANCE_ID}="
    for tag in raw.get("tags") or []:
        if isinstance(tag, str) and tag.startswith(prefix):
            return owned_instance_id(NAME_PREFIX + tag[len(prefix) :])
    return None


def from_environment(environ: Mapping[str, str] | None = None) -> ShadeformProvider | None:
    """The adapter from ``SHADEFORM_API_KEY`` (optional ``GPUBROKER_SHADEFORM_SSH_KEY_ID``), or None."""
    env = os.environ if environ is None else environ
    api_key = env.get("SHADEFORM_API_KEY", "").strip()
    if not api_key:
        return None
    return ShadeformProvider(
        api_key, ssh_key_id=env.get("GPUBROKER_SHADEFORM_SSH_KEY_ID", "").strip() or None
    )


__all__ = [
    "DEFAULT_BASE_URL",
    "MESSAGE_ERRORS",
    "RENTAL_TYPES",
    "STATE_MAP",
    "ShadeformProvider",
    "accelerator_name",
    "error_from_response",
    "from_environment",
    "split_instance_type",
]
