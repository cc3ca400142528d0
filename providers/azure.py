"""Azure adapter over Azure Resource Manager via azure-mgmt-compute (does I/O: HTTPS to management.azure.com).

Prices come from the public Retail Prices API (:mod:`providers.azure_pricing`). API facts this
module depends on, checked against the installed azure-mgmt-compute 39.0.0
(``azure/mgmt/compute/operations/_operations.py``) and learn.microsoft.com:

* Paths: ``/subscriptions/{sub}/providers/Microsoft.Compute/skus`` (api-version 2021-07-01,
  ``$filter=location eq '<region>'``, paged by ``nextLink``) and
  ``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}``
  (api-version 2026-04-01; GET ``$expand=instanceView``, PUT, DELETE; the list is paged).
* Launch: ARM's PUT is create-or-update keyed by name, so our deterministic name makes a retried
  launch address the same VM; we GET first and return an existing VM as is, so a retry never
  re-PUTs create-only properties. The PUT goes with ``polling=False``: PENDING from the 201 answer,
  no scheduler job held (or SDK poller thread left running) for the minutes a GPU VM takes. A
  failure found later (AllocationFailed, ...) shows in ``get_instance`` as FAILED, the instance
  view's ``ProvisioningState/failed/<code>`` as ``state_reason``.
* The NIC and public IP are created by the VM itself (``networkProfile.networkApiVersion`` +
  ``networkInterfaceConfigurations``, supported by this SDK; azure-mgmt-network is not needed),
  all with ``deleteOption: Delete`` so deleting the VM releases NIC, IP and OS disk. The subnet
  (one per region) must exist: ``subnet_ids`` or the convention in :meth:`AzureProvider.subnet_id`.
* Spot: ``priority: Spot``, ``evictionPolicy`` and ``billingProfile.maxPrice`` (-1: pay up to the
  on-demand price, never evicted for price). Eviction is visible through ARM only as the state it
  leaves: with policy Deallocate (our default) the VM stays with ``PowerState/deallocated`` —
  the broker never deallocates, so a deallocated Spot VM of ours is PREEMPTED; with policy Delete
  the VM is gone (404) and the only ARM trace is an Activity Log event
  ``Microsoft.Compute/virtualMachines/evictSpotVM/action``, which this adapter does not query.
  The 30 s notice (Scheduled Events, ``Preempt``) is only visible inside the VM (IMDS).
* Reserved: Azure reservations are a billing discount that applies by itself; the launch-time
  construct is an on-demand capacity reservation group, which ``request.reservation_id`` names
  (a resource id, or a group name in our resource group).
* Errors: ARM bodies ``{"error": {code, message, details[]}}`` raised as azure.core
  ``HttpResponseError``; :data:`ERROR_CODES` maps the codes. Compute throttling is HTTP 429 with
  code ``OperationNotAllowed`` and ``details[].code`` ``TooManyRequests`` (aka.ms/arm-throttling),
  so the status decides first; quota is ``OperationNotAllowed`` + "... exceeding approved ...
  quota" (the test Azure's own Karpenter provider uses).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.compute import ComputeManagementClient

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
from broker.core.types import CapacityType, Offer
from providers.azure_pricing import (
    HOURS_IN_TERM,
    PROVIDER,
    RETAIL_PRICES_URL,
    RetailPrices,
    gpu_sku,
    offers_for,
    split_zone,
    zone_name,
)
from providers.http import retry_after_seconds

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)

DEFAULT_REGIONS = ("eastus", "eastus2", "westus3", "southcentralus")
DEFAULT_RESOURCE_GROUP = "gpubroker"
# Azure's HPC image (GPU drivers, CUDA, InfiniBand) that the ND/NC GPU sizes are documented with.
DEFAULT_IMAGE = "microsoft-dsvm:ubuntu-hpc:2204:latest"
SPOT_NOTICE_SECONDS = 30  # Scheduled Events "Preempt" notice, in-VM only
EVICTION_POLICIES = ("Deallocate", "Delete")

# PowerState/<x> from the instance view -> ours (learn.microsoft.com "States and billing status").
POWER_STATES: dict[str, InstanceState] = {
    "starting": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "stopping": InstanceState.STOPPING,
    "stopped": InstanceState.STOPPED,  # powered off from inside or by a user: still billed
    "deallocating": InstanceState.STOPPING,
    "deallocated": InstanceState.STOPPED,
    "unknown": InstanceState.UNKNOWN,
}
# properties.provisioningState -> ours, used when there is no power state (a PUT's answer).
PROVISIONING_STATES: dict[str, InstanceState] = {
    "creating": InstanceState.PENDING,
    "updating": InstanceState.PENDING,
    "migrating": InstanceState.PENDING,
    "succeeded": InstanceState.RUNNING,  # created and not since stopped (no instance view to say)
    "failed": InstanceState.FAILED,
    "canceled": InstanceState.FAILED,
    "deleting": InstanceState.STOPPING,  # on its way out; the resource is gone when it completes
}
# A Spot VM of ours in these power states was evicted: the broker never deallocates.
SPOT_EVICTED_POWER_STATES = frozenset({"deallocating", "deallocated"})

# ARM / Compute error code -> our type. Codes not here fall back to the HTTP status (_status_kind).
ERROR_CODES: dict[str, type[ProviderError]] = {
    # capacity (azure-sdk-for-go-extensions pkg/errors; aka.ms/azureskunotavailable)
    "SkuNotAvailable": InsufficientCapacity,
    "AllocationFailed": InsufficientCapacity,
    "ZonalAllocationFailed": InsufficientCapacity,
    "OverconstrainedAllocationRequest": InsufficientCapacity,
    "OverconstrainedZonalAllocationRequest": InsufficientCapacity,
    # quota; "OperationNotAllowed" is quota only when its message says so (see _classify)
    "QuotaExceeded": QuotaExceeded,
    # credentials and permissions
    "AuthorizationFailed": AuthError,
    "LinkedAuthorizationFailed": AuthError,
    "InvalidAuthenticationToken": AuthError,
    "InvalidAuthenticationTokenTenant": AuthError,
    "ExpiredAuthenticationToken": AuthError,
    "AuthenticationFailed": AuthError,
    "SubscriptionNotFound": AuthError,
    # requests Azure will never accept as sent (a retry does not help)
    "OperationNotAllowed": InvalidRequest,
    "InvalidParameter": InvalidRequest,
    "BadRequest": InvalidRequest,
    "InvalidTemplate": InvalidRequest,
    "InvalidTemplateDeployment": InvalidRequest,
    "InvalidRequestContent": InvalidRequest,
    "InvalidResourceReference": InvalidRequest,  # e.g. the subnet does not exist
    "InvalidResourceName": InvalidRequest,
    "PropertyChangeNotAllowed": InvalidRequest,
    "PlatformImageNotFound": InvalidRequest,
    "ImageNotFound": InvalidRequest,
    "LocationNotAvailableForResourceType": InvalidRequest,
    "MissingSubscriptionRegistration": InvalidRequest,
    "ResourceGroupNotFound": InvalidRequest,  # configuration, not "the instance is gone"
    # may pass
    "TooManyRequests": Transient,
    "SubscriptionRequestsThrottled": Transient,
    "AnotherOperationInProgress": Transient,
    "OperationPreempted": Transient,
    "RetryableError": Transient,
    "InternalServerError": Transient,
    "InternalExecutionError": Transient,
    "ServiceUnavailable": Transient,
    "ServerTimeout": Transient,
    "GatewayTimeout": Transient,
    # gone
    "ResourceNotFound": NotFound,
    "NotFound": NotFound,
}
_QUOTA_WORDS = ("quota", "LowPriorityCores")
_AADSTS = re.compile(r"AADSTS\d+")


def _status_kind(status: int) -> type[ProviderError]:
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFound
    if status in (408, 429) or status >= 500:
        return Transient
    return InvalidRequest


def _classify(code: str, message: str, detail_codes: Sequence[str]) -> type[ProviderError] | None:
    if code == "OperationNotAllowed" and any(word.lower() in message.lower() for word in _QUOTA_WORDS):
        return QuotaExceeded
    for candidate in (code, *detail_codes):
        if candidate in ERROR_CODES and candidate != "OperationNotAllowed":
            return ERROR_CODES[candidate]
    return ERROR_CODES.get(code)


def _arm_error(exc: HttpResponseError) -> tuple[str, str, list[str]]:
    """(code, message, detail codes) of an ARM error body."""
    if exc.error is not None and exc.error.code:
        details = [str(d.code) for d in exc.error.details or [] if getattr(d, "code", None)]
        return str(exc.error.code), str(exc.error.message or ""), details
    try:
        body = exc.response.json() if exc.response is not None else None
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        details = [str(d.get("code")) for d in error.get("details") or [] if isinstance(d, dict)]
        return str(error.get("code") or ""), str(error.get("message") or ""), details
    return "", "", []


def error_from_azure(exc: AzureError, *, region: str | None = None, launching: bool = False) -> ProviderError:
    """The typed error for an azure-core exception (ARM code table first, then the HTTP status)."""
    where: dict[str, Any] = {"provider": PROVIDER, "region": region}
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        # Connection refused/reset, timeout, answer lost: the request may or may not have been done.
        return Transient(f"{type(exc).__name__}: {exc.message}", code="transport", **where)
    if isinstance(exc, HttpResponseError) and exc.response is not None:
        status = int(exc.status_code or exc.response.status_code)
        if status < 400:  # azure-core's DecodeError: a success status with a body that is not JSON
            return Transient(f"unreadable Azure answer (HTTP {status})", code="bad-json", **where)
        code, message, details = _arm_error(exc)
        text = f"{code or f'HTTP {status}'}: {message}" if message else f"HTTP {status} {code}".strip()
        header = exc.response.headers.get("Retry-After")
        retry_after = (
            retry_after_seconds(httpx.Response(status, headers={"Retry-After": header})) if header else None
        )
        kind = Transient if status == 429 else (_classify(code, message, details) or _status_kind(status))
        if launching and kind is NotFound:
            kind = InvalidRequest  # on launch a missing thing is one we named (subnet, image, group)
        if kind is Transient:
            return Transient(text, code=code or str(status), retry_after=retry_after, **where)
        return kind(text, code=code or str(status), **where)
    if isinstance(exc, ClientAuthenticationError):
        # The credential could not get a token (no response): its message may quote configuration,
        # so only the Entra error code (AADSTSnnnn) is kept.
        aadsts = _AADSTS.search(str(exc.message))
        hint = f" ({aadsts.group(0)})" if aadsts else ""
        return AuthError(f"Azure credential failed: {type(exc).__name__}{hint}", code="credential", **where)
    return Transient(f"{type(exc).__name__}: {exc.message}", code=type(exc).__name__, **where)


def vm_state(provisioning: str, power: str | None, *, spot: bool) -> InstanceState:
    """Our state from a VM's provisioningState and instance-view power state (in this order)."""
    provisioning, power = provisioning.lower(), power.lower() if power else None
    if provisioning == "deleting":
        return InstanceState.STOPPING
    if spot and power in SPOT_EVICTED_POWER_STATES:
        return InstanceState.PREEMPTED
    if provisioning == "failed" and power != "running":
        return InstanceState.FAILED  # a failed *update* of a running VM leaves it running
    if power is not None:
        return POWER_STATES.get(power, InstanceState.UNKNOWN)
    return PROVISIONING_STATES.get(provisioning, InstanceState.UNKNOWN)


def _our_id(raw: Mapping[str, Any]) -> str | None:
    tags = raw.get("tags") or {}
    if tags.get(TAG_MANAGED) == "true" and tags.get(TAG_INSTANCE_ID):
        return str(tags[TAG_INSTANCE_ID])
    return owned_instance_id(raw.get("name"))


def _parse_time(value: object) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


class AzureProvider:
    """The Azure adapter. Single attempts (SDK retries off); the resilience layer retries."""

    name = PROVIDER

    def __init__(
        self,
        credential: TokenCredential,
        subscription_id: str,
        resource_group: str = DEFAULT_RESOURCE_GROUP,
        *,
        regions: Sequence[str] = DEFAULT_REGIONS,
        subnet_ids: Mapping[str, str] | None = None,
        ssh_public_key: str | None = None,
        admin_username: str = "azureuser",
        spot_eviction_policy: str = "Deallocate",
        reservation_term: str = "1 Year",
        base_url: str | None = None,
        prices_base_url: str = RETAIL_PRICES_URL,
        clock: Clock = utc_now,
        timeout: float = 30.0,
        allow_insecure_http: bool = False,
    ) -> None:
        """``allow_insecure_http`` is for tests only: bearer tokens over http://127.0.0.1 fakes."""
        if not subscription_id or not resource_group:
            raise ValueError("an Azure subscription id and resource group are required")
        if spot_eviction_policy not in EVICTION_POLICIES:
            raise ValueError(f"spot_eviction_policy must be one of {EVICTION_POLICIES}")
        if reservation_term not in HOURS_IN_TERM:
            raise ValueError(f"reservation_term must be one of {tuple(HOURS_IN_TERM)}")
        self._subscription = subscription_id
        self._rg = resource_group
        self._regions = tuple(regions)
        self._subnet_ids = dict(subnet_ids or {})
        self._ssh_public_key = ssh_public_key
        self._admin = admin_username
        self._eviction_policy = spot_eviction_policy
        self._reservation_term = reservation_term
        self._clock = clock
        # enforce_https is a per-request option of azure-core's BearerTokenCredentialPolicy; every
        # call (and every page and poll it makes) carries these keyword arguments.
        self._kw: dict[str, Any] = {"enforce_https": False} if allow_insecure_http else {}
        self._compute = ComputeManagementClient(
            credential,
            subscription_id,
            base_url=base_url,
            retry_total=0,  # one attempt: the resilience layer owns retries
            connection_timeout=min(timeout, 10.0),
            read_timeout=timeout,
        )
        self._prices = RetailPrices(prices_base_url, timeout=timeout)
        self.capabilities = Capabilities(
            capacity_types=frozenset(CapacityType),
            reservations=True,
            interruption_notice_seconds=SPOT_NOTICE_SECONDS,
            availability_signal=False,  # SKU restrictions say "not for you", never "sold out"
            live_prices=True,
            launch_idempotency=LaunchIdempotency.UNIQUE_NAME,
            regions=self._regions,
        )

    def __repr__(self) -> str:  # the credential never appears
        return f"AzureProvider(resource_group={self._rg!r}, regions={self._regions!r})"

    def close(self) -> None:
        self._compute.close()
        self._prices.close()

    @contextmanager
    def _arm(self, region: str | None = None, *, launching: bool = False) -> Iterator[None]:
        try:
            yield
        except AzureError as exc:
            raise error_from_azure(exc, region=region, launching=launching) from None
        except ValueError as exc:  # a body that is not the JSON promised (json, (De)SerializationError)
            raise Transient(
                f"unreadable Azure answer: {type(exc).__name__}",
                provider=PROVIDER,
                region=region,
                code="bad-json",
            ) from None

    # --- offers -------------------------------------------------------------------------------
    def list_offers(self, *, regions: Sequence[str] | None = None) -> list[Offer]:
        """GPU offers per region and zone: on-demand, Spot (where the size allows it) and reserved
        (``reservation_term``, hourly = term price / hours in the term)."""
        observed_at = self._clock()
        offers: list[Offer] = []
        for region in regions or self._regions:
            with self._arm(region):
                pager = self._compute.resource_skus.list(filter=f"location eq '{region}'", **self._kw)
                skus = [sku.as_dict() for sku in pager]
            for raw in skus:
                sku = gpu_sku(raw, region)
                if sku is None:
                    continue
                prices = self._prices.sku_prices(region, sku.name)
                offers.extend(
                    offers_for(sku, prices, observed_at=observed_at, reservation_term=self._reservation_term)
                )
        return offers

    # --- instances ----------------------------------------------------------------------------
    def subnet_id(self, region: str) -> str:
        """The subnet VMs in ``region`` join: configured, else the gpubroker-<region> VNet convention."""
        return self._subnet_ids.get(region) or (
            f"/subscriptions/{self._subscription}/resourceGroups/{self._rg}/providers/"
            f"Microsoft.Network/virtualNetworks/gpubroker-{region}/subnets/default"
        )

    def _image_reference(self, request: LaunchRequest) -> dict[str, str]:
        image = request.image or DEFAULT_IMAGE
        if image.startswith("/subscriptions/"):
            return {"id": image}  # a custom or gallery image
        parts = image.split(":")
        if len(parts) != 4 or not all(parts):
            raise InvalidRequest(
                f"image {image!r} is neither a URN 'publisher:offer:sku:version' nor a resource id",
                provider=PROVIDER,
                region=request.region,
                code="bad-image",
            )
        return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))

    def vm_body(self, request: LaunchRequest) -> dict[str, Any]:
        """The PUT body for ``request`` (REST JSON, as in the VirtualMachines_CreateOrUpdate docs)."""
        key = request.ssh_public_key or self._ssh_public_key
        if not key:
            raise InvalidRequest(
                "Azure Linux VMs need an SSH key (request.ssh_public_key or GPUBROKER_AZURE_SSH_PUBLIC_KEY)",
                provider=PROVIDER,
                region=request.region,
                code="no-ssh-key",
            )
        properties: dict[str, Any] = {
            "hardwareProfile": {"vmSize": request.instance_type},
            "storageProfile": {
                "imageReference": self._image_reference(request),
                "osDisk": {
                    "createOption": "FromImage",
                    "deleteOption": "Delete",
                    "managedDisk": {"storageAccountType": "Premium_LRS"},
                },
            },
            "osProfile": {
                "computerName": request.name,
                "adminUsername": self._admin,
                "linuxConfiguration": {
                    "disablePasswordAuthentication": True,
                    "ssh": {
                        "publicKeys": [
                            {"path": f"/home/{self._admin}/.ssh/authorized_keys", "keyData": key.strip()}
                        ]
                    },
                },
            },
            "networkProfile": {
                "networkApiVersion": "2022-11-01",
                "networkInterfaceConfigurations": [
                    {
                        "name": f"{request.name}-nic",
                        "properties": {
                            "primary": True,
                            "deleteOption": "Delete",
                            "ipConfigurations": [
                                {
                                    "name": "ipconfig1",
                                    "properties": {
                                        "primary": True,
                                        "subnet": {"id": self.subnet_id(request.region)},
                                        "publicIPAddressConfiguration": {
                                            "name": f"{request.name}-ip",
                                            "sku": {"name": "Standard", "tier": "Regional"},
                                            "properties": {
                                                "deleteOption": "Delete",
                                                "publicIPAllocationMethod": "Static",
                                            },
                                        },
                                    },
                                }
                            ],
                        },
                    }
                ],
            },
        }
        if request.capacity_type is CapacityType.SPOT:
            properties["priority"] = "Spot"
            properties["evictionPolicy"] = self._eviction_policy
            # -1: pay up to the on-demand price, so the VM is never evicted for price.
            max_price = float(request.max_price_per_hour) if request.max_price_per_hour else -1
            properties["billingProfile"] = {"maxPrice": max_price}
        elif request.capacity_type is CapacityType.RESERVED:
            group = str(request.reservation_id)
            if not group.startswith("/subscriptions/"):
                group = (
                    f"/subscriptions/{self._subscription}/resourceGroups/{self._rg}/providers/"
                    f"Microsoft.Compute/capacityReservationGroups/{group}"
                )
            properties["capacityReservation"] = {"capacityReservationGroup": {"id": group}}
        body: dict[str, Any] = {
            "location": request.region,
            "tags": {**request.labels, TAG_MANAGED: "true", TAG_INSTANCE_ID: request.instance_id},
            "properties": properties,
        }
        zone = split_zone(request.region, request.zone)
        if zone:
            body["zones"] = [zone]
        return body

    def _get_vm(self, name: str, region: str | None) -> dict[str, Any] | None:
        try:
            with self._arm(region):
                vm = self._compute.virtual_machines.get(self._rg, name, expand="instanceView", **self._kw)
        except NotFound:
            return None
        return vm.as_dict()

    def launch(self, request: LaunchRequest) -> Instance:
        body = self.vm_body(request)  # bad input fails before any call
        existing = self._get_vm(request.name, request.region)
        if existing is not None:
            return self._instance(existing)  # a retry after a lost answer: the same VM
        with self._arm(request.region, launching=True):
            poller = self._compute.virtual_machines.begin_create_or_update(
                self._rg, request.name, body, polling=False, **self._kw
            )
            created = poller.result().as_dict()
        log.info("azure: creating %s (%s) in %s", request.name, request.instance_type, request.region)
        return self._instance(created)

    def get_instance(self, instance_id: str, *, region: str) -> Instance | None:
        raw = self._get_vm(NAME_PREFIX + instance_id, region)
        return self._instance(raw) if raw is not None else None

    def list_instances(self, *, regions: Sequence[str] | None = None) -> list[Instance]:
        """Our VMs in the resource group (found by tag or name), each read with its instance view.

        The resource-group list cannot expand instance views without a scale-set filter, so each
        VM of ours costs one more GET: fine for the tens of VMs a broker runs.
        """
        with self._arm():
            listed = [vm.as_dict() for vm in self._compute.virtual_machines.list(self._rg, **self._kw)]
        wanted = {r.lower() for r in regions} if regions else None
        instances: list[Instance] = []
        for raw in listed:
            location = str(raw.get("location", "")).lower()
            if _our_id(raw) is None or (wanted is not None and location not in wanted):
                continue
            full = self._get_vm(str(raw["name"]), location)
            if full is not None:  # deleted in between: gone
                instances.append(self._instance(full))
        return instances

    def terminate(self, instance_id: str, *, region: str) -> None:
        """DELETE the VM (NIC, IP and OS disk go with it); 202/204 and 404 all mean done for us."""
        try:
            with self._arm(region):
                self._compute.virtual_machines.begin_delete(
                    self._rg, NAME_PREFIX + instance_id, polling=False, **self._kw
                )
        except NotFound:
            return
        log.info("azure: deleting %s%s", NAME_PREFIX, instance_id)

    def check(self) -> ProviderStatus:
        """One page of the resource group's VM list: checks token, subscription and resource group."""
        try:
            with self._arm():
                next(iter(self._compute.virtual_machines.list(self._rg, **self._kw).by_page()), None)
        except (AuthError, InvalidRequest) as exc:
            return ProviderStatus(PROVIDER, configured=False, reachable=True, detail=str(exc))
        except ProviderError as exc:
            return ProviderStatus(PROVIDER, configured=True, reachable=False, detail=str(exc))
        except Exception as exc:  # check() never raises
            return ProviderStatus(PROVIDER, configured=True, reachable=False, detail=type(exc).__name__)
        return ProviderStatus(PROVIDER, configured=True, reachable=True, detail="ok")

    def _instance(self, raw: Mapping[str, Any]) -> Instance:
        props = raw.get("properties") or {}
        statuses = (props.get("instanceView") or {}).get("statuses") or []
        codes = [str(s.get("code", "")) for s in statuses]
        power = next((c.split("/", 1)[1] for c in codes if c.startswith("PowerState/")), None)
        spot = str(props.get("priority", "")).lower() == "spot"
        state = vm_state(str(props.get("provisioningState", "")), power, spot=spot)
        reason: str | None = None
        if state is InstanceState.PREEMPTED:
            reason = f"Spot eviction (PowerState/{power}, eviction policy {props.get('evictionPolicy')})"
        for status in statuses:
            code = str(status.get("code", ""))
            if code.lower().startswith("provisioningstate/failed"):
                reason = code.split("/", 2)[-1] + (f": {status['message']}" if status.get("message") else "")
        if (props.get("capacityReservation") or {}).get("capacityReservationGroup"):
            capacity = CapacityType.RESERVED
        else:
            capacity = CapacityType.SPOT if spot else CapacityType.ON_DEMAND
        region = str(raw.get("location", "")).lower()
        zones = raw.get("zones") or []
        return Instance(
            provider=PROVIDER,
            instance_id=_our_id(raw) or "",
            provider_instance_id=str(raw.get("id", "")),
            instance_type=str((props.get("hardwareProfile") or {}).get("vmSize", "")),
            region=region,
            zone=zone_name(region, str(zones[0])) if zones else None,
            capacity_type=capacity,
            state=state,
            launched_at=_parse_time(props.get("timeCreated")),
            state_reason=reason,
        )


def _pairs(value: str) -> dict[str, str]:
    """ "eastus=/subscriptions/...,westus3=/subscriptions/..." -> {region: id}."""
    pairs = (item.split("=", 1) for item in value.split(",") if "=" in item)
    return {k.strip(): v.strip() for k, v in pairs if k.strip() and v.strip()}


def from_environment() -> AzureProvider | None:
    """The adapter from ``AZURE_SUBSCRIPTION_ID`` and ``DefaultAzureCredential``, or None.

    Optional: ``GPUBROKER_AZURE_RESOURCE_GROUP`` (default "gpubroker"), ``GPUBROKER_AZURE_REGIONS``
    (comma-separated), ``GPUBROKER_AZURE_SUBNET_IDS`` ("region=subnet-id,..."),
    ``GPUBROKER_AZURE_SSH_PUBLIC_KEY``, ``GPUBROKER_AZURE_SPOT_EVICTION_POLICY`` (Deallocate|Delete).
    """
    subscription = os.environ.get("AZURE_SUBSCRIPTION_ID", "").strip()
    if not subscription:
        return None
    from azure.identity import DefaultAzureCredential  # only when configured: it is slow to import

    regions = [r.strip() for r in os.environ.get("GPUBROKER_AZURE_REGIONS", "").split(",") if r.strip()]
    return AzureProvider(
        DefaultAzureCredential(),
        subscription,
        os.environ.get("GPUBROKER_AZURE_RESOURCE_GROUP", "").strip() or DEFAULT_RESOURCE_GROUP,
        regions=regions or DEFAULT_REGIONS,
        subnet_ids=_pairs(os.environ.get("GPUBROKER_AZURE_SUBNET_IDS", "")),
        ssh_public_key=os.environ.get("GPUBROKER_AZURE_SSH_PUBLIC_KEY") or None,
        spot_eviction_policy=os.environ.get("GPUBROKER_AZURE_SPOT_EVICTION_POLICY", "").strip()
        or "Deallocate",
    )
