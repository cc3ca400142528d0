"""Vast.ai adapter: rent marketplace GPU machines through the REST API at console.vast.ai (does network I/O).

Verified against (Nov 2026): docs.vast.ai "API Reference" (authentication.mdx: ``Authorization:
Bearer``; creating-instances-with-api.mdx: ``POST /api/v0/bundles/`` search, ``PUT
/api/v0/asks/{offer_id}/`` create with ``price`` as the interruptible bid, ``new_contract`` is the
instance id; rate-limits-and-errors.mdx; the OpenAPI pages for ``GET /api/v0/instances/`` -- deprecated
for accounts made after 2026-06-02, use ``/api/v1/instances/`` -- and ``DELETE
/api/v0/instances/{id}/`` with ``no_such_instance``/404); vast-cli ``vastai/api/instances.py``
(v1 listing: ``select_filters``, ``order_by``, ``limit`` <= 25, ``after_token``/``next_token``) and
``vastai/api/offers.py`` (search body: ``type`` "on-demand" | "bid", default filters
verified/external/rentable/rented, ``allocated_storage``).

Model and encodings:

* Vast is a marketplace of single machines ("asks"). ``instance_type`` names the ask, so the
  broker can rent exactly the machine it was offered: ``"<num_gpus>x <gpu_name> #<ask id>"``, e.g.
  ``"8x H100 SXM #21474836"``. An ask is rented once; renting a taken ask answers ``no_such_ask``.
* Region is the machine's country code, from the last part of ``geolocation`` ("Texas, US" -> "US");
  zone is None. Configured ``regions`` filter the search with ``geolocation: {in: [...]}``.
* Prices: on demand ``dph_total`` (USD per machine-hour including ``allocated_storage`` of
  ``disk_gb``); interruptible ``min_bid``, the lowest bid that runs now. Every listed ask is
  rentable now (search filters ``rentable``/``rented``), so availability is AVAILABLE.
* Spot: ``request.max_price_per_hour`` is sent as ``price``, the per-machine bid in $/hour.
* No idempotency token: launch lists our instances and returns the one whose ``label`` is
  ``gpubroker-<instance_id>``; ``cancel_unavail`` makes an unschedulable rent fail instead of
  leaving a stopped instance behind.
* Preemption: an outbid interruptible instance is *stopped* (processes killed, disk kept) and may
  resume when it is the highest bid again (docs FAQ "rental types"). We report an ``is_bid``
  instance the user still wants running (``intended_status: running``) whose contract is stopped
  (``cur_state: stopped``) as PREEMPTED; terminate() then destroys it so storage stops billing.
* Instances' ``instance_type`` is ``"<num_gpus>x <gpu_name>"``: an instance row does not name the
  ask it was rented from.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from broker.clock import Clock, utc_now
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
from providers.http import DEFAULT_TIMEOUT, error_for_status, json_decimal, make_client, send

PROVIDER = "vast"
DEFAULT_BASE_URL = "https://console.vast.ai"
ENV_API_KEY = "VAST_API_KEY"
SOURCE = "vast:bundles"
DEFAULT_GPU_NAMES = ("H100 SXM", "H100 PCIE", "H100 NVL", "H200", "B200")
DEFAULT_IMAGE = "vastai/base-image:cuda-12.4.1-auto"
UNKNOWN_REGION = "unknown"
PAGE_LIMIT = 25  # the v1 instance list caps a page at 25 rows (vast-cli show_instances)
MAX_PAGES = 400
_INSTANCE_TYPE = re.compile(r"^(?P<count>[1-9]\d*)x (?P<gpu>.+?) #(?P<ask>\d+)$")
_SEARCH_ORDER = {"on-demand": [["dph_total", "asc"]], "bid": [["min_bid", "asc"]]}

# --- provider states -> ours (one visible table) ---------------------------------------------
# actual_status is the container's state (docs: "VastAI.show_instance"); null while provisioning.
ACTUAL_STATUS: Mapping[str | None, InstanceState] = {
    None: InstanceState.PENDING,
    "created": InstanceState.PENDING,
    "scheduling": InstanceState.PENDING,  # "Attempting to schedule your instance. ..."
    "loading": InstanceState.PENDING,  # image download / container start
    "running": InstanceState.RUNNING,
    "rebooting": InstanceState.PENDING,
    "stopped": InstanceState.STOPPED,
    "frozen": InstanceState.STOPPED,  # paused with memory kept
    "exited": InstanceState.FAILED,  # "never reaches running: destroy and retry" (openapi.yaml)
    "unknown": InstanceState.UNKNOWN,  # no recent heartbeat from the host
    "offline": InstanceState.UNKNOWN,  # host disconnected from Vast
}
# Rules over more than one field, applied before ACTUAL_STATUS (see instance_state()):
#   cur_state "unloaded" (contract released on destroy)                    -> TERMINATED
#   is_bid and intended_status "running" and cur_state "stopped" (outbid)   -> PREEMPTED
#   intended_status "stopped" while actual_status "running"                -> STOPPING

# --- provider errors -> ours (one visible table) ---------------------------------------------
# Bodies are {"success": false, "error": <code>, "msg": <text>}; some omit success or error, and
# 429s are often plain text "API requests too frequent" (rate-limits-and-errors.mdx).
ERROR_CODES: Mapping[str, type[ProviderError]] = {
    "no_such_ask": InsufficientCapacity,  # 410/404: the ask was rented by someone else or withdrawn
    "insufficient_credit": QuotaExceeded,
    "invalid_args": InvalidRequest,
    "invalid_parameters": InvalidRequest,
    "no_such_instance": NotFound,
    "not_found": NotFound,
    "search_quota_exceeded": Transient,  # comes as 429 (handled by status, keeping Retry-After)
}
# Older create answers: 400 invalid_args, "error 404/3603: no_such_ask  Instance type by id 7 is
# not available." -- the code is in the message.
_CAPACITY_MESSAGE = re.compile(r"no_such_ask|instance type by id \d+ is not available|already rented", re.I)


class VastProvider:
    """Vast.ai marketplace machines, on demand and interruptible (bid)."""

    name = PROVIDER

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        regions: Sequence[str] = (),
        gpu_names: Sequence[str] = DEFAULT_GPU_NAMES,
        image: str = DEFAULT_IMAGE,
        disk_gb: int = 50,
        offer_limit: int = 64,
        clock: Clock = utc_now,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    ) -> None:
        if not api_key:
            raise ValueError("a Vast.ai API key is required")
        # Bearer header, not ?api_key=: a key in the URL would reach httpx's request log.
        self._client = make_client(base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)
        self._base_url = base_url
        self._regions = tuple(regions)
        self._gpu_names = tuple(gpu_names)
        self._image = image
        self._disk_gb = disk_gb
        self._offer_limit = offer_limit
        self._clock = clock
        self.capabilities = Capabilities(
            capacity_types=frozenset({CapacityType.ON_DEMAND, CapacityType.SPOT}),
            reservations=False,  # prepaid "reserved" discounts apply to a running instance only
            interruption_notice_seconds=None,  # outbid instances are stopped without notice
            availability_signal=True,
            live_prices=True,
            launch_idempotency=LaunchIdempotency.LOOKUP_FIRST,
            regions=self._regions,
        )

    def __repr__(self) -> str:
        return f"VastProvider(base_url={self._base_url!r}, regions={self._regions!r})"

    def close(self) -> None:
        self._client.close()

    # --- offers ----------------------------------------------------------------------------
    def list_offers(self, *, regions: Sequence[str] | None = None) -> list[Offer]:
        wanted = tuple(regions) if regions is not None else self._regions
        if regions is not None and not wanted:
            return []
        offers: list[Offer] = []
        for search_type, capacity in (("on-demand", CapacityType.ON_DEMAND), ("bid", CapacityType.SPOT)):
            query: dict[str, Any] = {
                "gpu_name": {"in": list(self._gpu_names)},
                "verified": {"eq": True},
                "external": {"eq": False},
                "rentable": {"eq": True},
                "rented": {"eq": False},
                "type": search_type,
                "order": _SEARCH_ORDER[search_type],
                "limit": self._offer_limit,
                "allocated_storage": self._disk_gb,
            }
            if wanted:
                query["geolocation"] = {"in": list(wanted)}
            body = self._call("POST", "/api/v0/bundles/", json_body=query)
            observed = self._clock()
            for ask in body.get("offers") or []:
                offer = self._offer(ask, capacity, observed)
                if offer is not None and (not wanted or offer.region in wanted):
                    offers.append(offer)
        return offers

    def _offer(self, ask: Mapping[str, Any], capacity: CapacityType, observed: datetime) -> Offer | None:
        price = json_decimal(ask.get("dph_total" if capacity is CapacityType.ON_DEMAND else "min_bid"))
        count = ask.get("num_gpus")
        gpu_name = str(ask.get("gpu_name") or "").strip()
        well_formed = isinstance(ask.get("id"), int) and isinstance(count, int) and count > 0 and gpu_name
        if price is None or price < 0 or not well_formed:
            return None
        cpu_ram_mb = json_decimal(ask.get("cpu_ram"))
        return Offer(
            cloud=PROVIDER,
            region=_country(ask.get("geolocation")),
            zone=None,
            instance_type=f"{count}x {gpu_name} #{ask['id']}",
            accelerator=accelerator_name(gpu_name, ask.get("gpu_ram")),
            accelerator_count=count,
            vcpus=json_decimal(ask.get("cpu_cores_effective")),
            memory_gib=None if cpu_ram_mb is None else (cpu_ram_mb / 1024).quantize(Decimal("0.01")),
            capacity_type=capacity,
            price_per_hour=price,
            currency="USD",
            source=SOURCE,
            observed_at=observed,
            availability=Availability.AVAILABLE,
        )

    # --- instances ---------------------------------------------------------------------------
    def launch(self, request: LaunchRequest) -> Instance:
        ask_id = self._check(request)
        existing = self._find(request.name, region=request.region)
        if existing is not None:
            return self._instance(existing)
        env: dict[str, str] = {"GPUBROKER_INSTANCE_ID": request.instance_id}
        body: dict[str, Any] = {
            "client_id": "me",
            "image": request.image or self._image,
            "disk": self._disk_gb,
            "label": request.name,
            "runtype": "ssh_direct",
            "env": env,
            "cancel_unavail": True,  # fail instead of creating a stopped instance
        }
        if request.capacity_type is CapacityType.SPOT:
            body["price"] = float(request.max_price_per_hour or 0)  # the interruptible bid, $/h
        answer = self._call("PUT", f"/api/v0/asks/{ask_id}/", json_body=body, region=request.region)
        contract = answer.get("new_contract")
        if not answer.get("success") or contract is None:
            raise _error_from_body(answer, status=200, region=request.region) or Transient(
                "create answered without new_contract",
                provider=PROVIDER,
                region=request.region,
                code="malformed",
            )
        match = _INSTANCE_TYPE.match(request.instance_type)
        assert match is not None  # checked in _check
        return Instance(
            provider=PROVIDER,
            instance_id=request.instance_id,
            provider_instance_id=str(contract),
            instance_type=f"{match['count']}x {match['gpu']}",
            region=request.region,
            zone=None,
            capacity_type=request.capacity_type,
            state=InstanceState.PENDING,
            price_per_hour=request.max_price_per_hour if request.capacity_type is CapacityType.SPOT else None,
        )

    def get_instance(self, instance_id: str, *, region: str) -> Instance | None:
        row = self._find(NAME_PREFIX + instance_id, region=region)
        return None if row is None else self._instance(row)

    def list_instances(self, *, regions: Sequence[str] | None = None) -> list[Instance]:
        instances = [
            self._instance(row) for row in self._rows(region=None) if owned_instance_id(row.get("label"))
        ]
        return [i for i in instances if regions is None or i.region in regions]

    def terminate(self, instance_id: str, *, region: str) -> None:
        row = self._find(NAME_PREFIX + instance_id, region=region)
        if row is None:
            return
        try:
            answer = self._call("DELETE", f"/api/v0/instances/{row['id']}/", json_body={}, region=region)
        except NotFound:
            return  # destroyed between the lookup and the delete: done
        if answer.get("success") is False:
            error = _error_from_body(answer, status=200, region=region)
            if error is not None and not isinstance(error, NotFound):
                raise error

    def check(self) -> ProviderStatus:
        try:
            self._call("GET", "/api/v0/users/current/")
        except AuthError as exc:
            return ProviderStatus(
                PROVIDER, configured=True, reachable=True, detail=f"credentials refused: {exc}"
            )
        except ProviderError as exc:
            return ProviderStatus(PROVIDER, configured=True, reachable=False, detail=str(exc))
        except Exception as exc:  # check() never raises
            return ProviderStatus(PROVIDER, configured=True, reachable=False, detail=type(exc).__name__)
        return ProviderStatus(PROVIDER, configured=True, reachable=True, detail="API answered")

    # --- helpers -----------------------------------------------------------------------------
    def _check(self, request: LaunchRequest) -> int:
        def invalid(message: str) -> InvalidRequest:
            return InvalidRequest(message, provider=PROVIDER, region=request.region, code="request")

        if request.capacity_type not in self.capabilities.capacity_types:
            raise invalid(f"Vast.ai sells no {request.capacity_type.value} capacity through this API")
        match = _INSTANCE_TYPE.match(request.instance_type)
        if not match:
            raise invalid("instance_type must be '<num_gpus>x <gpu_name> #<ask id>' from list_offers")
        if request.capacity_type is CapacityType.SPOT and request.max_price_per_hour is None:
            raise invalid("an interruptible Vast.ai instance needs max_price_per_hour: it is the bid")
        return int(match["ask"])

    def _rows(self, *, region: str | None) -> list[dict[str, Any]]:
        """Every instance of the account, following next_token (v1 pages hold at most 25)."""
        params: dict[str, str] = {
            "select_filters": json.dumps({}),
            "order_by": json.dumps([{"col": "id", "dir": "asc"}]),
            "limit": str(PAGE_LIMIT),
        }
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page = self._call("GET", "/api/v1/instances/", params=params, region=region)
            rows.extend(row for row in page.get("instances") or [] if isinstance(row, dict) and row.get("id"))
            token = page.get("next_token")
            if not token:
                return rows
            if str(token) in seen:
                raise Transient("instance list repeated a page token", provider=PROVIDER, region=region)
            seen.add(str(token))
            params["after_token"] = str(token)
        raise Transient("instance list did not end", provider=PROVIDER, region=region, code="pagination")

    def _find(self, label: str, *, region: str | None) -> dict[str, Any] | None:
        rows = [row for row in self._rows(region=region) if row.get("label") == label]
        rows.sort(key=lambda row: row.get("cur_state") == "unloaded")  # a live one wins
        return rows[0] if rows else None

    def _instance(self, row: Mapping[str, Any]) -> Instance:
        label = row.get("label")
        started = row.get("start_date")
        return Instance(
            provider=PROVIDER,
            instance_id=owned_instance_id(label) or str(row["id"]),
            provider_instance_id=str(row["id"]),
            instance_type=f"{row.get('num_gpus')}x {row.get('gpu_name')}",
            region=_country(row.get("geolocation")),
            zone=None,
            capacity_type=CapacityType.SPOT if row.get("is_bid") else CapacityType.ON_DEMAND,
            state=instance_state(row),
            launched_at=datetime.fromtimestamp(float(started), UTC)
            if isinstance(started, int | float | Decimal)
            else None,
            state_reason=row.get("status_msg") or None,
            price_per_hour=json_decimal(row.get("dph_total")),
            public_ip=row.get("public_ipaddr") or None,
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        region: str | None = None,
    ) -> dict[str, Any]:
        """One request: the JSON object answered, or the typed error for whatever came back."""
        response = send(
            self._client, method, path, provider=PROVIDER, region=region, json=json_body, params=params
        )
        body = _json_body(response)
        if response.status_code >= 400:
            raise vast_error(response, body, region=region)
        if not isinstance(body, dict):
            raise Transient(
                f"non-JSON answer to {method} {path}", provider=PROVIDER, region=region, code="malformed"
            )
        return body


def instance_state(row: Mapping[str, Any]) -> InstanceState:
    """Our state for an instance row: the multi-field rules, then ``ACTUAL_STATUS``."""
    actual, intended, contract = row.get("actual_status"), row.get("intended_status"), row.get("cur_state")
    if contract == "unloaded" or actual == "destroyed":
        return InstanceState.TERMINATED
    if row.get("is_bid") and intended == "running" and (contract == "stopped" or actual == "stopped"):
        return InstanceState.PREEMPTED
    if intended == "stopped" and actual == "running":
        return InstanceState.STOPPING
    return ACTUAL_STATUS.get(actual, InstanceState.UNKNOWN)


def vast_error(response: httpx.Response, body: Any, *, region: str | None = None) -> ProviderError:
    """The typed error for an HTTP error answer (status first for auth/throttle/5xx, then the body)."""
    status = response.status_code
    message = _message(body) or f"HTTP {status} from {response.request.method} {response.request.url.path}"
    code = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), str) else None
    if status in (401, 403, 429) or status >= 500:  # 429 keeps Retry-After when Vast sends one
        return error_for_status(response, provider=PROVIDER, region=region, message=message, code=code)
    error = _error_from_body(body, status=status, region=region)
    return error or error_for_status(response, provider=PROVIDER, region=region, message=message, code=code)


def _error_from_body(body: Any, *, status: int, region: str | None) -> ProviderError | None:
    if not isinstance(body, dict):
        return None
    code, message = body.get("error"), _message(body) or f"Vast.ai refused the request (HTTP {status})"
    if _CAPACITY_MESSAGE.search(message):  # before the table: old answers say invalid_args
        return InsufficientCapacity(message, provider=PROVIDER, region=region, code="no_such_ask")
    if isinstance(code, str) and code in ERROR_CODES:
        return ERROR_CODES[code](message, provider=PROVIDER, region=region, code=code)
    if isinstance(code, str) or body.get("success") is False:
        return InvalidRequest(
            message, provider=PROVIDER, region=region, code=code if isinstance(code, str) else None
        )
    return None


def _message(body: Any) -> str | None:
    if isinstance(body, dict):
        for key in ("msg", "message", "error"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    if isinstance(body, str) and body.strip():
        return body.strip()[:200]
    return None


def accelerator_name(gpu_name: str, gpu_ram_mb: Any = None) -> str:
    """Canonical accelerator for a Vast ``gpu_name``, spelled as SkyPilot's catalogs do before the
    alias table: "H100 SXM" -> "H100", "RTX 4090" -> "RTX4090". Vast names A100s by form factor
    only ("A100 SXM4", "A100 PCIE"); ``gpu_ram`` (MB) tells 40 GB from 80 GB apart."""
    name = gpu_name.strip().replace("RTX PRO ", "RTXPRO").replace("RTX ", "RTX").replace(" ", "-")
    if name.upper().startswith("A100"):
        ram = json_decimal(gpu_ram_mb)
        name = "A100-80GB" if ram is not None and ram >= 70_000 else "A100"
    return canonical_accelerator(name)


def _json_body(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content, parse_float=Decimal)  # exact prices, no float rounding
    except ValueError:
        return response.text or None  # 429s are often plain text


def _country(geolocation: Any) -> str:
    """ "Texas, US" -> "US"; "SE" -> "SE"; anything else -> "unknown"."""
    last = str(geolocation or "").rsplit(",", 1)[-1].strip().upper()
    return last if re.fullmatch(r"[A-Z]{2}", last) else UNKNOWN_REGION


def from_environment() -> VastProvider | None:
    """The adapter from ``VAST_API_KEY`` (the variable the Vast.ai docs use), or None."""
    api_key = os.environ.get(ENV_API_KEY, "").strip()
    return VastProvider(api_key) if api_key else None


__all__ = ["ACTUAL_STATUS", "ERROR_CODES", "VastProvider", "from_environment", "instance_state", "vast_error"]
