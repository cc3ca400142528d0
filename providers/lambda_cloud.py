"""Lambda Cloud adapter over its documented REST API v1 (does I/O: HTTPS to cloud.lambda.ai).

API facts this module depends on, checked against Lambda's OpenAPI spec (v1.4 as vendored in
leptonai/leptonai go-pkg/openapi/lambdalabs/api/openapi.yaml; v1.10 models as generated in the
``lambda-ai-cloud-api-client`` package) and SkyPilot's ``sky/provision/lambda_cloud``:

* Base URL ``https://cloud.lambda.ai/api/v1`` (``cloud.lambdalabs.com`` is the deprecated
  alias); the API key goes in ``Authorization: Bearer <key>`` (HTTP Basic also works).
* ``GET /instance-types`` → ``{"data": {name: {"instance_type": {name, description,
  gpu_description, price_cents_per_hour, specs{vcpus, memory_gib, storage_gib, gpus}},
  "regions_with_capacity_available": [{name, description}]}}}``: the only capacity signal.
* ``POST /instance-operations/launch`` ``{region_name, instance_type_name, ssh_key_names
  (exactly one), name, tags[{key, value}], image?, user_data?}`` → ``{"data": {"instance_ids"}}``.
  There is no idempotency token, so launch looks up our deterministic name first. ``quantity``
  is left out: spec 1.10 no longer lists it (skypilot-org/skypilot#7084) and it defaults to 1.
* ``GET /instances`` / ``GET /instances/{id}`` → ``{"data": ...}``; ``POST
  /instance-operations/terminate {instance_ids}``.
* Errors: ``{"error": {code, message, suggestion}}`` with the codes in :data:`ERROR_CODES`.
  Rate limits (docs "Cloud API"): about 1 request/s, launches 1 per 10-12 s; a 429's body is
  not documented, so it is mapped from the status alone.

Lambda sells no spot capacity and takes no reservations through the API: on-demand only.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
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

PROVIDER = "lambda"
DEFAULT_BASE_URL = "https://cloud.lambda.ai/api/v1"
OFFER_SOURCE = "lambda:instance-types"

# Lambda instance status -> ours. "terminating" is irreversible and no longer serves work, so it
# is already TERMINATED for the broker. "unhealthy" is a system failure a restart can clear: the
# instance still exists (and bills), so it is not terminal.
STATE_MAP: dict[str, InstanceState] = {
    "booting": InstanceState.PENDING,
    "active": InstanceState.RUNNING,
    "unhealthy": InstanceState.UNKNOWN,
    "terminating": InstanceState.TERMINATED,
    "terminated": InstanceState.TERMINATED,
    "preempted": InstanceState.PREEMPTED,  # in newer specs' InstanceStatus enum
}

# Lambda error code -> our type. Anything else falls back to the HTTP status.
ERROR_CODES: dict[str, type[ProviderError]] = {
    "global/invalid-api-key": AuthError,  # 401
    "global/account-inactive": AuthError,  # 403: unverified e-mail or no payment method
    "global/invalid-address": AuthError,  # 403: billing address invalid; the account cannot launch
    "global/quota-exceeded": QuotaExceeded,  # 400 on launch
    "instance-operations/launch/insufficient-capacity": InsufficientCapacity,  # 400 on launch
    "global/invalid-parameters": InvalidRequest,  # 400
    "instance-operations/launch/file-system-in-wrong-region": InvalidRequest,
    "instance-operations/launch/file-systems-not-supported": InvalidRequest,
    "global/duplicate": InvalidRequest,
    "global/object-does-not-exist": NotFound,  # 404 (on launch: a named key/type/filesystem)
    "global/unknown": Transient,  # 500
}

# Lambda tag keys must match this (RequestedTagEntry in spec 1.10); other labels are not sent.
_TAG_KEY = re.compile(r"^[a-z][a-z0-9-:]+$")
# Lambda image ids are 32 hex digits; anything else is an image family ("lambda-stack-22-04").
_IMAGE_ID = re.compile(r"^[0-9a-f]{32}$")
_TYPE_NAME = re.compile(r"^gpu_(?P<count>\d+)x_(?P<model>[a-z0-9]+)(?P<rest>(?:_[a-z0-9]+)*)$")
_MEMORY = re.compile(r"^(?P<gb>\d+)gb$")


def parse_instance_type(name: str) -> tuple[str, int] | None:
    """Canonical GPU model and count from a Lambda type name, or None for a non-GPU type.

    ``gpu_8x_h100_sxm5`` -> ("H100", 8); ``gpu_8x_a100_80gb_sxm4`` -> ("A100-80GB", 8);
    ``gpu_1x_a100_sxm4`` -> ("A100", 1) (the 40 GB part, as SkyPilot names it);
    ``gpu_1x_gh200`` -> ("GH200", 1). Form-factor tokens (sxm5, pcie) do not change the model.
    """
    match = _TYPE_NAME.match(name)
    if not match:
        return None
    model = match["model"].upper()
    for token in match["rest"].split("_"):
        memory = _MEMORY.match(token)
        # A100 40 GB vs 80 GB is a choice users make, so the size stays in the name.
        if memory and model == "A100" and memory["gb"] == "80":
            model = "A100-80GB"
    count = int(match["count"])
    if count <= 0:
        return None
    return canonical_accelerator(model), count


def error_from_response(
    response: httpx.Response, *, region: str | None = None, launching: bool = False
) -> ProviderError:
    """The typed error for a Lambda error response (code table first, then the HTTP status)."""
    code: str | None = None
    message: str | None = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        message = body["error"].get("message")
        suggestion = body["error"].get("suggestion")
        if message and suggestion:
            message = f"{message} {suggestion}"
    if response.status_code == 429:
        # Documented limit, undocumented body: the status is the signal.
        return Transient(
            message or "rate limited (HTTP 429)",
            provider=PROVIDER,
            region=region,
            code=code or "429",
            retry_after=retry_after_seconds(response),
        )
    kind = ERROR_CODES.get(code or "")
    if kind is None:
        return error_for_status(response, provider=PROVIDER, region=region, message=message, code=code)
    if launching and kind is NotFound:
        # On launch the missing object is one we named (type, SSH key, filesystem): a bad
        # request, not "the instance is gone".
        kind = InvalidRequest
    text = message or f"HTTP {response.status_code}"
    if kind is Transient:
        return Transient(
            text, provider=PROVIDER, region=region, code=code, retry_after=retry_after_seconds(response)
        )
    return kind(text, provider=PROVIDER, region=region, code=code)


_P = ParamSpec("_P")
_R = TypeVar("_R")


_malformed_is_transient = malformed_is_transient(PROVIDER)


class LambdaCloudProvider:
    """The Lambda Cloud adapter. Makes single attempts; the resilience layer retries."""

    name = PROVIDER

    def __init__(
        self,
        api_key: str,
        *,
        ssh_key_names: Sequence[str] = (),
        base_url: str = DEFAULT_BASE_URL,
        regions: Sequence[str] = (),
        clock: Callable[[], datetime] = utc_now,
        timeout: httpx.Timeout | float | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Lambda Cloud API key is required")
        self._ssh_key_names = tuple(ssh_key_names)
        self._regions = tuple(regions)
        self._clock = clock
        headers = {"Authorization": f"Bearer {api_key}"}
        kwargs: dict[str, Any] = {"headers": headers}
        if timeout is not None:
            kwargs["timeout"] = timeout
        self._client = make_client(base_url.rstrip("/"), **kwargs)
        self.capabilities = Capabilities(
            capacity_types=frozenset({CapacityType.ON_DEMAND}),
            reservations=False,
            interruption_notice_seconds=None,
            availability_signal=True,
            live_prices=True,
            launch_idempotency=LaunchIdempotency.LOOKUP_FIRST,
            regions=self._regions,
        )

    def __repr__(self) -> str:  # never show the key
        return f"LambdaCloudProvider(base_url={str(self._client.base_url)!r}, regions={self._regions!r})"

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
    ) -> Any:
        response = send(self._client, method, path, provider=PROVIDER, region=region, json=body)
        if response.status_code >= 400:
            raise error_from_response(response, region=region, launching=launching)
        try:
            payload = response.json()
        except ValueError:
            raise Transient(
                f"unparseable response to {method} {path}", provider=PROVIDER, region=region, code="bad-json"
            ) from None
        if not isinstance(payload, dict) or "data" not in payload:
            raise Transient(
                f"response to {method} {path} has no data", provider=PROVIDER, region=region, code="bad-json"
            )
        return payload["data"]

    # --- offers -------------------------------------------------------------------------------
    @_malformed_is_transient
    def list_offers(self, *, regions: Sequence[str] | None = None) -> list[Offer]:
        """One on-demand offer per (GPU type, region).

        Lambda only names the regions that have capacity for a type right now. We offer each type
        in the "known" regions: the ones asked for, else the configured ones, else every region
        that has capacity for some type in this answer. A type is AVAILABLE where Lambda lists
        capacity and UNAVAILABLE elsewhere, so a sold-out type keeps its (live) price.
        """
        data = self._call("GET", "/instance-types")
        observed_at = self._clock()
        wanted = tuple(regions) if regions else self._regions
        entries = [entry for entry in data.values() if isinstance(entry, dict)]
        known: set[str] = set(wanted)
        if not known:
            for entry in entries:
                known.update(r["name"] for r in entry.get("regions_with_capacity_available") or [])
        offers: list[Offer] = []
        for entry in entries:
            itype = entry.get("instance_type") or {}
            parsed = parse_instance_type(str(itype.get("name", "")))
            if parsed is None:
                continue
            accelerator, count = parsed
            specs = itype.get("specs") or {}
            if isinstance(specs.get("gpus"), int) and specs["gpus"] > 0:
                count = specs["gpus"]  # the API's own count wins over the name
            with_capacity = {r["name"] for r in entry.get("regions_with_capacity_available") or []}
            price = Decimal(str(itype["price_cents_per_hour"])) / 100
            for region in sorted(known):
                offers.append(
                    Offer(
                        cloud=PROVIDER,
                        region=region,
                        zone=None,
                        instance_type=itype["name"],
                        accelerator=accelerator,
                        accelerator_count=count,
                        vcpus=_decimal(specs.get("vcpus")),
                        memory_gib=_decimal(specs.get("memory_gib")),
                        capacity_type=CapacityType.ON_DEMAND,
                        price_per_hour=price,
                        currency="USD",
                        source=OFFER_SOURCE,
                        observed_at=observed_at,
                        availability=(
                            Availability.AVAILABLE if region in with_capacity else Availability.UNAVAILABLE
                        ),
                    )
                )
        return offers

    # --- instances ----------------------------------------------------------------------------
    def _raw_instances(self, region: str | None = None) -> list[dict[str, Any]]:
        data = self._call("GET", "/instances", region=region)
        return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []

    def _find(self, instance_id: str, region: str | None = None) -> dict[str, Any] | None:
        for raw in self._raw_instances(region):
            if _our_id(raw) == instance_id:
                return raw
        return None

    @_malformed_is_transient
    def launch(self, request: LaunchRequest) -> Instance:
        if request.capacity_type is not CapacityType.ON_DEMAND:
            raise InvalidRequest(
                f"Lambda Cloud sells on-demand capacity only, not {request.capacity_type.value}",
                provider=PROVIDER,
                region=request.region,
                code="unsupported-capacity-type",
            )
        if not self._ssh_key_names:
            raise InvalidRequest(
                "Lambda launches need a registered SSH key name (GPUBROKER_LAMBDA_SSH_KEYS)",
                provider=PROVIDER,
                region=request.region,
                code="no-ssh-key",
            )
        # No idempotency token in the API: our deterministic name is the key. A launch whose
        # answer was lost has already made the instance, and this finds it.
        existing = self._find(request.instance_id, request.region)
        if existing is not None:
            return self._instance(existing)
        body: dict[str, Any] = {
            "region_name": request.region,
            "instance_type_name": request.instance_type,
            "ssh_key_names": [self._ssh_key_names[0]],  # the API takes exactly one
            "name": request.name,
            "tags": _tags(request),
        }
        if request.image:
            kind = "id" if _IMAGE_ID.match(request.image) else "family"
            body["image"] = {kind: request.image}
        if request.ssh_public_key:
            body["user_data"] = (
                "#cloud-config\nssh_authorized_keys:\n  - " + request.ssh_public_key.strip() + "\n"
            )
        data = self._call(
            "POST", "/instance-operations/launch", body=body, region=request.region, launching=True
        )
        ids = data.get("instance_ids") if isinstance(data, dict) else None
        if not ids:
            # "fewer than the requested quantity might have been launched": none were.
            raise InsufficientCapacity(
                "launch returned no instance ids",
                provider=PROVIDER,
                region=request.region,
                code="no-instances",
            )
        log.info("lambda: launched %s as %s in %s", request.instance_id, ids[0], request.region)
        return Instance(
            provider=PROVIDER,
            instance_id=request.instance_id,
            provider_instance_id=str(ids[0]),
            instance_type=request.instance_type,
            region=request.region,
            zone=None,
            capacity_type=CapacityType.ON_DEMAND,
            state=InstanceState.PENDING,  # every launch starts "booting"
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
        if raw is None or raw.get("status") in ("terminating", "terminated"):
            return  # gone or going: done
        try:
            self._call(
                "POST", "/instance-operations/terminate", body={"instance_ids": [raw["id"]]}, region=region
            )
        except NotFound:
            return
        log.info("lambda: terminating %s (%s)", instance_id, raw["id"])

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
        itype = raw.get("instance_type") or {}
        cents = itype.get("price_cents_per_hour")
        return Instance(
            provider=PROVIDER,
            instance_id=_our_id(raw) or "",
            provider_instance_id=str(raw["id"]),
            instance_type=str(itype.get("name", "")),
            region=str((raw.get("region") or {}).get("name", "")),
            zone=None,
            capacity_type=CapacityType.ON_DEMAND,
            state=STATE_MAP.get(status, InstanceState.UNKNOWN),
            state_reason=status if status in ("unhealthy", "preempted") else None,
            price_per_hour=Decimal(str(cents)) / 100 if cents is not None else None,
            public_ip=raw.get("ip") or None,
        )


def _decimal(value: object) -> Decimal | None:
    return Decimal(str(value)) if isinstance(value, int | float | str) and value != "" else None


def _tags(request: LaunchRequest) -> list[dict[str, str]]:
    tags = [{"key": TAG_MANAGED, "value": "true"}, {"key": TAG_INSTANCE_ID, "value": request.instance_id}]
    for key, value in sorted(request.labels.items()):
        if _TAG_KEY.match(key) and key not in (TAG_MANAGED, TAG_INSTANCE_ID):
            tags.append({"key": key, "value": value})
    return tags


def _our_id(raw: Mapping[str, Any]) -> str | None:
    """Our instance id from the name (primary) or our tag (instances renamed in the console)."""
    found = owned_instance_id(raw.get("name"))
    if found:
        return found
    for tag in raw.get("tags") or []:
        if isinstance(tag, dict) and tag.get("key") == TAG_INSTANCE_ID:
            return owned_instance_id(NAME_PREFIX + str(tag.get("value", "")))
    return None


def from_environment(environ: Mapping[str, str] | None = None) -> LambdaCloudProvider | None:
    """The adapter from ``LAMBDA_API_KEY`` (and SSH key names from ``GPUBROKER_LAMBDA_SSH_KEYS``,
    comma-separated), or None when no key is set."""
    env = os.environ if environ is None else environ
    api_key = env.get("LAMBDA_API_KEY", "").strip()
    if not api_key:
        return None
    keys = [k.strip() for k in env.get("GPUBROKER_LAMBDA_SSH_KEYS", "").split(",") if k.strip()]
    return LambdaCloudProvider(api_key, ssh_key_names=keys)


__all__ = [
    "DEFAULT_BASE_URL",
    "ERROR_CODES",
    "STATE_MAP",
    "LambdaCloudProvider",
    "error_from_response",
    "from_environment",
    "parse_instance_type",
]
