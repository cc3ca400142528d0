"""Google Cloud (Compute Engine) provider adapter: offers, launch, preemption, reservations (does I/O).

Speaks the Compute Engine v1 REST API through ``google-cloud-compute`` (REST transport) and
prices offers from the Cloud Billing Catalog (``google-cloud-billing``, REST transport; the
catalog SDK defaults to gRPC). Every call is a single attempt (``retry=None``: the generated
clients retry ``get``/``aggregatedList`` on 503 by default); retries live in the resilience layer.

Choices worth knowing (each one cited where it is made):

* Launch is idempotent twice over: the instance name is ``request.name`` (GCE refuses a second
  instance of that name with 409 ``alreadyExists``; we then return the one that exists) and the
  insert carries a ``requestId`` derived from our instance id ("if you make the request again with
  the same request ID, the server ... will ignore the second request": InsertInstanceRequest docs;
  in practice it answers with the first Operation, failed or not).
* Stockouts and quota errors usually arrive inside the insert Operation, not the HTTP answer, so
  launch waits for the Operation (``zoneOperations.wait``, which returns within ~2 minutes) and
  maps ``error.errors[].code``. An Operation still running after the wait is returned as PENDING.
* Preemption: a preempted Spot VM is stopped (TERMINATED) or deleted, per its
  ``instanceTerminationAction``, and GCE records a zone Operation of type
  ``compute.instances.preempted`` whose ``targetLink`` is the VM. We look that Operation up for any
  stopped or vanished Spot VM of ours (Google's sample "compute_preemptible_history" filters
  ``zoneOperations.list`` the same way). Spot VMs get a 30 s notice (ACPI G2 soft-off) first.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import google.auth
import google.auth.exceptions
import httpx
import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import Credentials
from google.cloud import billing_v1, compute_v1

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
from broker.core.types import CapacityType, Offer
from providers.gcp_pricing import (
    GPU_MACHINE_TYPES,
    CatalogSku,
    MachineSpec,
    PriceBook,
    catalog_offers,
    catalog_sku,
    machine_spec,
    region_of,
    reservation_offer,
)
from providers.http import error_for_status, retry_after_seconds

log = logging.getLogger(__name__)

PROVIDER = "gcp"
COMPUTE_ENGINE_SERVICE = "services/6F81-5844-456A"  # Billing Catalog id of "Compute Engine"
SELF_LINK_BASE = "https://www.googleapis.com/compute/v1"  # GCE writes selfLinks/targetLinks on this base
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# The zones of the bundled GCP H100 spot traces.
DEFAULT_ZONES = (
    "us-central1-a",
    "us-central1-b",
    "us-east4-a",
    "us-west1-a",
    "europe-west1-c",
    "europe-west3-c",
    "asia-southeast1-b",
    "asia-south2-b",
)
DEFAULT_IMAGE = "projects/debian-cloud/global/images/family/debian-12"
# A3 Ultra boots from Hyperdisk only; the other A3/A2 types take Persistent Disk (not pd-standard).
HYPERDISK_ONLY = ("a3-ultragpu-",)
GVNIC_ONLY = ("a3-",)  # A3 machine types support only the gVNIC network interface
RESERVATION_NAME_KEY = "compute.googleapis.com/reservation-name"
PREEMPTED_OPERATION = "compute.instances.preempted"
SPOT_NOTICE_SECONDS = 30
ZONE_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
REQUEST_ID_NAMESPACE = uuid.UUID("4f6c8a0e-2b1d-5e7a-9c3f-8d2e1a7b6c50")
# Our requestId is stable for this long: long enough for any retry after a lost answer (those
# come within seconds), short enough that a stockout GCE remembers under that requestId does not
# answer a fresh launch attempt minutes later. A retry across the window edge is still one
# instance: the name is unique.
REQUEST_ID_WINDOW = timedelta(minutes=10)

# --- GCE instance status -> our state (cloud.google.com/compute/docs/instances/instance-life-cycle).
# GCE's TERMINATED means "stopped" (the VM and its disks still exist and can be started again).
INSTANCE_STATES: dict[str, InstanceState] = {
    "PROVISIONING": InstanceState.PENDING,
    "STAGING": InstanceState.PENDING,
    "PENDING": InstanceState.PENDING,
    "RUNNING": InstanceState.RUNNING,
    "PENDING_STOP": InstanceState.STOPPING,
    "STOPPING": InstanceState.STOPPING,
    "SUSPENDING": InstanceState.STOPPING,
    "DEPROVISIONING": InstanceState.STOPPING,
    "SUSPENDED": InstanceState.STOPPED,
    "STOPPED": InstanceState.STOPPED,
    "TERMINATED": InstanceState.STOPPED,
    "REPAIRING": InstanceState.UNKNOWN,
}
_STOPPED_STATES = frozenset({InstanceState.STOPPING, InstanceState.STOPPED})

# --- GCE error codes -> our errors. Keys are HTTP error ``errors[].reason`` (camelCase), the
# ErrorInfo ``reason`` in ``details``, and Operation ``error.errors[].code`` (UPPER_CASE).
ERROR_CODES: dict[str, type[ProviderError]] = {
    # no capacity in the zone (Operation errors; ErrorInfo reason "resource_availability")
    "ZONE_RESOURCE_POOL_EXHAUSTED": InsufficientCapacity,
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": InsufficientCapacity,
    "resource_availability": InsufficientCapacity,
    "resourcePoolExhausted": InsufficientCapacity,
    "STOCKOUT": InsufficientCapacity,
    # quota (403 quotaExceeded, Operation QUOTA_EXCEEDED, ErrorInfo QUOTA_EXCEEDED)
    "quotaExceeded": QuotaExceeded,
    "QUOTA_EXCEEDED": QuotaExceeded,
    # API rate limits are throttling, not quota, even when the message says "Quota exceeded for
    # quota metric 'Queries'" (403/429 rateLimitExceeded, ErrorInfo RATE_LIMIT_EXCEEDED)
    "rateLimitExceeded": Transient,
    "userRateLimitExceeded": Transient,
    "RATE_LIMIT_EXCEEDED": Transient,
    "RESOURCE_OPERATION_RATE_EXCEEDED": Transient,
    "backendError": Transient,
    "internalError": Transient,
    "INTERNAL_ERROR": Transient,
    "resourceNotReady": Transient,
    "RESOURCE_NOT_READY": Transient,
    # credentials / permissions / API not enabled
    "forbidden": AuthError,
    "insufficientPermissions": AuthError,
    "accessNotConfigured": AuthError,
    "SERVICE_DISABLED": AuthError,
    "authError": AuthError,
    "IAM_PERMISSION_DENIED": AuthError,
    # missing resources
    "notFound": NotFound,
    "RESOURCE_NOT_FOUND": NotFound,
    # the request itself is wrong
    "alreadyExists": InvalidRequest,
    "RESOURCE_ALREADY_EXISTS": InvalidRequest,
    "invalid": InvalidRequest,
    "badRequest": InvalidRequest,
    "invalidParameter": InvalidRequest,
    "conditionNotMet": InvalidRequest,
    "INVALID_FIELD_VALUE": InvalidRequest,
    "UNSUPPORTED_OPERATION": InvalidRequest,
    "CONDITION_NOT_MET": InvalidRequest,
}


def error_for_code(
    code: str, message: str, *, region: str | None, launching: bool = False
) -> ProviderError | None:
    """Our error for a GCE error code/reason, or None when the table does not know the code."""
    kind = ERROR_CODES.get(code)
    if kind is None:
        return None
    if launching and kind is NotFound:
        kind = InvalidRequest  # an insert naming a missing zone/image/reservation is a bad request
    return kind(message, provider=PROVIDER, region=region, code=code)


def error_from_api(
    exc: api_exceptions.GoogleAPICallError, *, region: str | None, launching: bool = False
) -> ProviderError:
    """Map an HTTP error the REST transport raised (``google.api_core.exceptions``)."""
    message = exc.message or type(exc).__name__
    reasons = [e.get("reason", "") for e in exc.errors if isinstance(e, Mapping)]
    if exc.reason:
        reasons.append(exc.reason)  # ErrorInfo.reason from ``details``
    code = reasons[0] if reasons else None
    response = _as_httpx_response(exc)
    if response.status_code == 401:  # its reason is "required" (the Authorization header), not a bad request
        return AuthError(message, provider=PROVIDER, region=region, code=code or "401")
    for reason in reasons:
        mapped = error_for_code(reason, message, region=region, launching=launching)
        if isinstance(mapped, Transient):
            mapped.retry_after = retry_after_seconds(response)
        if mapped is not None:
            return mapped
    error = error_for_status(response, provider=PROVIDER, region=region, message=message, code=code)
    if launching and isinstance(error, NotFound):
        return InvalidRequest(message, provider=PROVIDER, region=region, code=error.code)
    return error


def error_from_operation(
    operation: compute_v1.Operation, *, region: str | None, launching: bool = False
) -> ProviderError | None:
    """The error a finished Operation carries in ``error.errors[]``, or None when it succeeded."""
    errors = list(operation.error.errors)
    if not errors:
        return None
    message = "; ".join(f"{e.code}: {e.message}" for e in errors)
    for item in errors:
        mapped = error_for_code(item.code, message, region=region, launching=launching)
        if mapped is not None:
            return mapped
    status = operation.http_error_status_code or 400
    request = httpx.Request("POST", f"{SELF_LINK_BASE}/{operation.target_link or 'operation'}")
    return error_for_status(
        httpx.Response(status, request=request),
        provider=PROVIDER,
        region=region,
        message=message,
        code=errors[0].code,
    )


def _as_httpx_response(exc: api_exceptions.GoogleAPICallError) -> httpx.Response:
    """The SDK's ``requests`` response as httpx, so the shared status and Retry-After helpers read it."""
    raw = exc.response
    status = exc.code if isinstance(exc.code, int) else 500
    method = getattr(getattr(raw, "request", None), "method", None) or "GET"
    url = getattr(raw, "url", None) or SELF_LINK_BASE
    headers = dict(getattr(raw, "headers", None) or {})
    return httpx.Response(status, headers=headers, request=httpx.Request(method, str(url)))


def _last_segment(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value).astimezone(UTC) if value else None
    except ValueError:
        return None


class GcpProvider:
    """Compute Engine GPU VMs (A3/A2) on one project, in a configured set of zones."""

    name = PROVIDER

    def __init__(
        self,
        *,
        project: str,
        credentials: Credentials,
        zones: Sequence[str] = DEFAULT_ZONES,
        api_endpoint: str | None = None,
        billing_endpoint: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        timeout: float = 30.0,
        wait_timeout: float = 150.0,
        wait_for_operations: bool = True,
        machine_types: Sequence[str] = GPU_MACHINE_TYPES,
        default_image: str = DEFAULT_IMAGE,
        network: str = "global/networks/default",
        boot_disk_gb: int = 200,
        spot_termination_action: Literal["DELETE", "STOP"] = "DELETE",
        price_ttl: timedelta = timedelta(hours=6),
    ) -> None:
        if not project:
            raise ValueError("a GCP project id is required")
        self.project = project
        self.zones = tuple(zones)
        self._clock = clock
        self._timeout = timeout
        self._wait_timeout = wait_timeout
        self._wait = wait_for_operations
        self._machine_types = tuple(machine_types)
        if not all(re.fullmatch(r"[a-z][a-z0-9-]*", n) for n in self._machine_types):
            raise ValueError("machine type names are lowercase letters, digits and '-'")
        self._default_image = default_image
        self._network = network
        self._boot_disk_gb = boot_disk_gb
        self._spot_action = spot_termination_action
        self._price_ttl = price_ttl
        self._prices: tuple[PriceBook, datetime] | None = None
        self.capabilities = Capabilities(
            capacity_types=frozenset(CapacityType),
            reservations=True,
            interruption_notice_seconds=SPOT_NOTICE_SECONDS,
            availability_signal=False,  # only reservation offers say whether capacity is free
            live_prices=True,
            launch_idempotency=LaunchIdempotency.UNIQUE_NAME,
            regions=tuple(dict.fromkeys(region_of(z) for z in self.zones)),
        )
        compute_options = ClientOptions(api_endpoint=api_endpoint) if api_endpoint else None
        billing_options = ClientOptions(api_endpoint=billing_endpoint) if billing_endpoint else None
        common: dict[str, Any] = {"transport": "rest", "credentials": credentials}
        self._instances = compute_v1.InstancesClient(client_options=compute_options, **common)
        self._machine_types_client = compute_v1.MachineTypesClient(client_options=compute_options, **common)
        self._reservations = compute_v1.ReservationsClient(client_options=compute_options, **common)
        self._operations = compute_v1.ZoneOperationsClient(client_options=compute_options, **common)
        self._catalog = billing_v1.CloudCatalogClient(client_options=billing_options, **common)

    def __repr__(self) -> str:  # never the credentials
        return f"GcpProvider(project={self.project!r}, zones={self.zones!r})"

    # --- error translation ----------------------------------------------------------------------
    @contextmanager
    def _calling(self, region: str | None, *, launching: bool = False) -> Iterator[None]:
        def fail(kind: type[ProviderError], message: str, code: str) -> ProviderError:
            return kind(message, provider=PROVIDER, region=region, code=code)

        try:
            yield
        except ProviderError:
            raise
        except api_exceptions.GoogleAPICallError as exc:
            raise error_from_api(exc, region=region, launching=launching) from exc
        except google.auth.exceptions.TransportError as exc:  # token endpoint unreachable
            raise fail(Transient, f"auth transport: {type(exc).__name__}", "transport") from exc
        except google.auth.exceptions.GoogleAuthError as exc:  # refresh refused, no credentials
            # The message may quote the token endpoint's answer: name the type only.
            kind = Transient if getattr(exc, "retryable", False) else AuthError  # token endpoint 5xx
            raise fail(kind, f"credentials refused: {type(exc).__name__}", "auth") from exc
        except requests.exceptions.RequestException as exc:  # connect/read timeout, reset, refused
            raise fail(Transient, f"{type(exc).__name__}: {exc}", "transport") from exc
        except api_exceptions.GoogleAPIError as exc:  # RetryError and other non-HTTP SDK errors
            raise fail(Transient, f"{type(exc).__name__}: {exc}", "sdk") from exc

    # --- offers ---------------------------------------------------------------------------------
    def list_offers(self, *, regions: Sequence[str] | None = None) -> list[Offer]:
        wanted = set(regions) if regions is not None else None
        machines = self._gpu_machine_types()
        book, observed_at = self._price_book()
        zones = [z for z in self.zones if wanted is None or region_of(z) in wanted]
        offers = catalog_offers(machines, book, zones=zones, observed_at=observed_at)
        # Reservations anywhere in the project count, not only in the configured zones.
        specs = {name: spec for zone_specs in machines.values() for name, spec in zone_specs.items()}
        request = compute_v1.AggregatedListReservationsRequest(project=self.project)
        now = self._clock()
        with self._calling(None):
            for key, scoped in self._reservations.aggregated_list(
                request=request, retry=None, timeout=self._timeout
            ):
                zone = key.removeprefix("zones/")
                if wanted is not None and region_of(zone) not in wanted:
                    continue
                for reservation in scoped.reservations:
                    offer = reservation_offer(reservation, zone, specs, book, observed_at=now)
                    if offer is not None:
                        offers.append(offer)
        return offers

    def _gpu_machine_types(self) -> dict[str, dict[str, MachineSpec]]:
        """Our GPU machine types per zone, from one filtered ``machineTypes.aggregatedList``."""
        # Compute list filters: "eq" takes an RE2 regular expression that must match the whole field.
        names = "|".join(self._machine_types)  # plain [a-z0-9-] names: nothing to escape
        request = compute_v1.AggregatedListMachineTypesRequest(
            project=self.project, filter=f'name eq "({names})"'
        )
        found: dict[str, dict[str, MachineSpec]] = {}
        with self._calling(None):
            for key, scoped in self._machine_types_client.aggregated_list(
                request=request, retry=None, timeout=self._timeout
            ):
                for machine_type in scoped.machine_types:
                    spec = machine_spec(machine_type)
                    if spec is not None and spec.name in self._machine_types:
                        found.setdefault(key.removeprefix("zones/"), {})[spec.name] = spec
        return found

    def _price_book(self) -> tuple[PriceBook, datetime]:
        """The Compute Engine price book, re-read from the catalog when older than ``price_ttl``.

        The catalog lists tens of thousands of Compute Engine SKUs and changes a few times a
        month, so one read serves many offer refreshes; ``observed_at`` says how old it is.
        """
        now = self._clock()
        if self._prices is not None and now - self._prices[1] < self._price_ttl:
            return self._prices
        skus: list[CatalogSku] = []
        request = billing_v1.ListSkusRequest(parent=COMPUTE_ENGINE_SERVICE, page_size=5000)
        with self._calling(None):
            for sku in self._catalog.list_skus(request=request, retry=None, timeout=self._timeout):
                parsed = catalog_sku(sku)
                if parsed is not None:
                    skus.append(parsed)
        self._prices = (PriceBook.from_skus(skus), now)
        return self._prices

    # --- launch ---------------------------------------------------------------------------------
    def launch(self, request: LaunchRequest) -> Instance:
        zone = self._launch_zone(request)
        region = region_of(zone)
        insert = compute_v1.InsertInstanceRequest(
            project=self.project,
            zone=zone,
            instance_resource=self._instance_body(request, zone),
            request_id=self._request_id("insert", request.name, zone, request.capacity_type.value),
        )
        with self._calling(region, launching=True):
            try:
                operation = self._instances.insert_unary(request=insert, retry=None, timeout=self._timeout)
            except api_exceptions.Conflict as exc:
                if not any(e.get("reason") == "alreadyExists" for e in exc.errors if isinstance(e, Mapping)):
                    raise
                existing = self._get_in_zone(request.name, zone)
                if existing is None:  # deleted between the two calls
                    raise Transient(
                        exc.message or "alreadyExists", provider=PROVIDER, region=region, code="alreadyExists"
                    ) from exc
                return self._to_instance(existing)
            operation = self._settle(operation, zone)
            error = error_from_operation(operation, region=region, launching=True)
            if error is not None and error.code != "RESOURCE_ALREADY_EXISTS":
                raise error
            found = self._get_in_zone(request.name, zone)
        if found is not None:
            return self._to_instance(found)
        if error is not None:
            raise error
        # The insert is still running and the VM not visible yet: report what we asked for.
        return Instance(
            provider=PROVIDER,
            instance_id=request.instance_id,
            provider_instance_id=str(operation.target_id or ""),
            instance_type=request.instance_type,
            region=region,
            zone=zone,
            capacity_type=request.capacity_type,
            state=InstanceState.PENDING,
            state_reason=f"operation {operation.name} {operation.status.name}",
        )

    def _launch_zone(self, request: LaunchRequest) -> str:
        """The request's zone, else the first configured zone of its region."""
        zones = [request.zone] if request.zone else [z for z in self.zones if region_of(z) == request.region]
        if not zones or region_of(zones[0]) != request.region:
            message = f"no zone of region {request.region} given or configured (zone {request.zone})"
            raise InvalidRequest(message, provider=PROVIDER, region=request.region)
        return zones[0]

    def _instance_body(self, request: LaunchRequest, zone: str) -> compute_v1.Instance:
        machine_type = request.instance_type
        disk_type = "hyperdisk-balanced" if machine_type.startswith(HYPERDISK_ONLY) else "pd-balanced"
        interface = compute_v1.NetworkInterface(
            network=self._network,
            access_configs=[compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")],
        )
        if machine_type.startswith(GVNIC_ONLY):
            interface.nic_type = "GVNIC"
        spot = request.capacity_type is CapacityType.SPOT
        # GPU VMs cannot live-migrate: onHostMaintenance must be TERMINATE; Spot VMs also need
        # automaticRestart false (cloud.google.com/compute/docs/instances/create-use-spot).
        scheduling = compute_v1.Scheduling(
            provisioning_model="SPOT" if spot else "STANDARD",
            on_host_maintenance="TERMINATE",
            automatic_restart=not spot,
        )
        if spot:
            scheduling.instance_termination_action = self._spot_action
        if request.capacity_type is CapacityType.RESERVED:
            affinity = compute_v1.ReservationAffinity(
                consume_reservation_type="SPECIFIC_RESERVATION",
                key=RESERVATION_NAME_KEY,
                values=[request.reservation_id or ""],
            )
        else:  # keep on-demand/spot VMs from silently eating a reservation meant for RESERVED launches
            affinity = compute_v1.ReservationAffinity(consume_reservation_type="NO_RESERVATION")
        body = compute_v1.Instance(
            name=request.name,
            machine_type=f"zones/{zone}/machineTypes/{machine_type}",
            labels={**request.labels, TAG_MANAGED: "true", TAG_INSTANCE_ID: request.instance_id},
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=request.image or self._default_image,
                        disk_size_gb=self._boot_disk_gb,
                        disk_type=f"zones/{zone}/diskTypes/{disk_type}",
                    ),
                )
            ],
            network_interfaces=[interface],
            scheduling=scheduling,
            reservation_affinity=affinity,
        )
        if request.ssh_public_key:
            body.metadata = compute_v1.Metadata(
                items=[compute_v1.Items(key="ssh-keys", value=f"gpubroker:{request.ssh_public_key}")]
            )
        return body

    def _request_id(self, action: str, name: str, zone: str, detail: str = "") -> str:
        window = int(self._clock().timestamp() // REQUEST_ID_WINDOW.total_seconds())
        return str(
            uuid.uuid5(REQUEST_ID_NAMESPACE, f"{action}/{self.project}/{zone}/{name}/{detail}/{window}")
        )

    def _settle(self, operation: compute_v1.Operation, zone: str) -> compute_v1.Operation:
        """Wait (one ``zoneOperations.wait``, at most ~2 minutes server-side) unless already DONE."""
        if operation.status == compute_v1.Operation.Status.DONE or not self._wait:
            return operation
        wait = compute_v1.WaitZoneOperationRequest(project=self.project, zone=zone, operation=operation.name)
        return self._operations.wait(request=wait, retry=None, timeout=self._wait_timeout)

    # --- read -----------------------------------------------------------------------------------
    def get_instance(self, instance_id: str, *, region: str) -> Instance | None:
        name = NAME_PREFIX + instance_id
        found = self._find(f'name = "{name}"', [region])
        if found:
            return self._with_preemption(found[0])
        # A Spot VM preempted with instanceTerminationAction DELETE is gone; its preemption
        # Operation remains for a while.
        for zone in self._zones_of(region):
            operation = self._preemption(zone, name)
            if operation is not None:
                return Instance(
                    provider=PROVIDER,
                    instance_id=instance_id,
                    provider_instance_id=str(operation.target_id),
                    instance_type="",
                    region=region_of(zone),
                    zone=zone,
                    capacity_type=CapacityType.SPOT,
                    state=InstanceState.PREEMPTED,
                    state_reason=PREEMPTED_OPERATION,
                )
        return None

    def list_instances(self, *, regions: Sequence[str] | None = None) -> list[Instance]:
        found = self._find(f'labels.{TAG_MANAGED} = "true"', regions)
        return [self._with_preemption(i) for i in found if i.labels.get(TAG_MANAGED) == "true"]

    def _find(self, filter_: str, places: Sequence[str] | None) -> list[compute_v1.Instance]:
        """Instances matching a list filter in some regions or zones, from ``instances.aggregatedList``.

        Not ``returnPartialSuccess``: an inventory missing an unreachable zone would look like
        vanished VMs to the reconciler, so a partial answer fails the call instead.
        """
        request = compute_v1.AggregatedListInstancesRequest(project=self.project, filter=filter_)
        found: list[compute_v1.Instance] = []
        region = places[0] if places is not None and len(places) == 1 else None
        with self._calling(region):
            for key, scoped in self._instances.aggregated_list(
                request=request, retry=None, timeout=self._timeout
            ):
                zone = key.removeprefix("zones/")
                if places is None or zone in places or region_of(zone) in places:
                    found.extend(scoped.instances)
        return found

    def _get_in_zone(self, name: str, zone: str) -> compute_v1.Instance | None:
        try:
            return self._instances.get(
                request=compute_v1.GetInstanceRequest(project=self.project, zone=zone, instance=name),
                retry=None,
                timeout=self._timeout,
            )
        except api_exceptions.NotFound:
            return None

    def _zones_of(self, region: str) -> list[str]:
        """The configured zones of a region (a zone passed as the region is its own answer)."""
        if ZONE_RE.match(region):
            return [region]
        return [z for z in self.zones if region_of(z) == region]

    def _preemption(self, zone: str, name: str) -> compute_v1.Operation | None:
        """The ``compute.instances.preempted`` Operation GCE recorded for this VM, if any."""
        target = f"{SELF_LINK_BASE}/projects/{self.project}/zones/{zone}/instances/{name}"
        request = compute_v1.ListZoneOperationsRequest(
            project=self.project,
            zone=zone,
            filter=f'operationType="{PREEMPTED_OPERATION}" AND targetLink="{target}"',
        )
        with self._calling(region_of(zone)):
            for operation in self._operations.list(request=request, retry=None, timeout=self._timeout):
                if operation.operation_type == PREEMPTED_OPERATION and operation.target_link.endswith(
                    f"/zones/{zone}/instances/{name}"
                ):
                    return operation
        return None

    def _with_preemption(self, instance: compute_v1.Instance) -> Instance:
        mapped = self._to_instance(instance)
        if mapped.capacity_type is CapacityType.SPOT and mapped.state in _STOPPED_STATES:
            zone = mapped.zone or ""
            if self._preemption(zone, instance.name) is not None:
                return replace(mapped, state=InstanceState.PREEMPTED, state_reason=PREEMPTED_OPERATION)
        return mapped

    def _to_instance(self, instance: compute_v1.Instance) -> Instance:
        zone = _last_segment(instance.zone)
        scheduling = instance.scheduling
        if scheduling.provisioning_model == "SPOT" or scheduling.preemptible:
            capacity = CapacityType.SPOT
        elif instance.reservation_affinity.consume_reservation_type == "SPECIFIC_RESERVATION":
            capacity = CapacityType.RESERVED
        else:
            capacity = CapacityType.ON_DEMAND
        public_ip = None
        for interface in instance.network_interfaces:
            for access in interface.access_configs:
                public_ip = public_ip or access.nat_i_p or None  # the SDK spells natIP "nat_i_p"
        return Instance(
            provider=PROVIDER,
            instance_id=instance.labels.get(TAG_INSTANCE_ID)
            or owned_instance_id(instance.name)
            or instance.name,
            provider_instance_id=str(instance.id),
            instance_type=_last_segment(instance.machine_type),
            region=region_of(zone),
            zone=zone,
            capacity_type=capacity,
            state=INSTANCE_STATES.get(instance.status, InstanceState.UNKNOWN),
            launched_at=_parse_time(instance.creation_timestamp),
            state_reason=instance.status_message or None,
            public_ip=public_ip,
        )

    # --- terminate ------------------------------------------------------------------------------
    def terminate(self, instance_id: str, *, region: str) -> None:
        name = NAME_PREFIX + instance_id
        for instance in self._find(f'name = "{name}"', [region]):
            zone = _last_segment(instance.zone)
            delete = compute_v1.DeleteInstanceRequest(
                project=self.project,
                zone=zone,
                instance=name,
                request_id=self._request_id("delete", name, zone),
            )
            with self._calling(region_of(zone)):
                try:
                    operation = self._instances.delete_unary(
                        request=delete, retry=None, timeout=self._timeout
                    )
                    operation = self._settle(operation, zone)
                except api_exceptions.NotFound:
                    continue  # already gone: done
            error = error_from_operation(operation, region=region_of(zone))
            if error is not None and not isinstance(error, NotFound):
                raise error

    # --- health ---------------------------------------------------------------------------------
    def check(self) -> ProviderStatus:
        zone = self.zones[0] if self.zones else "us-central1-a"
        request = compute_v1.ListInstancesRequest(project=self.project, zone=zone, max_results=1)
        try:
            with self._calling(region_of(zone)):
                self._instances.list(request=request, retry=None, timeout=self._timeout)
        except AuthError as exc:
            return ProviderStatus(PROVIDER, configured=False, reachable=True, detail=str(exc))
        except ProviderError as exc:
            return ProviderStatus(PROVIDER, configured=True, reachable=False, detail=str(exc))
        return ProviderStatus(PROVIDER, configured=True, reachable=True, detail=f"project {self.project}")


def _adc_file_exists() -> bool:
    config = os.environ.get("CLOUDSDK_CONFIG") or str(Path.home() / ".config" / "gcloud")
    return (Path(config) / "application_default_credentials.json").is_file()


def from_environment() -> GcpProvider | None:
    """The adapter from Application Default Credentials, or None when GCP is not configured.

    Credentials: ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's ADC file, or the metadata server
    (``google.auth.default()``). Project: ``GPUBROKER_GCP_PROJECT``, else the credentials'
    project. Zones: ``GPUBROKER_GCP_ZONES`` (comma-separated), else :data:`DEFAULT_ZONES`. Without
    any hint of GCP configuration the metadata server is not probed (that costs seconds off GCP).
    """
    project = os.environ.get("GPUBROKER_GCP_PROJECT", "").strip()
    if not (project or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or _adc_file_exists()):
        return None
    try:
        credentials, default_project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except google.auth.exceptions.GoogleAuthError as exc:
        log.info("GCP not configured: %s", type(exc).__name__)
        return None
    project = project or (default_project or "")
    if not project:
        log.info("GCP credentials found but no project: set GPUBROKER_GCP_PROJECT")
        return None
    zones_env = os.environ.get("GPUBROKER_GCP_ZONES", "")
    zones = tuple(z.strip() for z in zones_env.split(",") if z.strip()) or DEFAULT_ZONES
    return GcpProvider(project=project, credentials=credentials, zones=zones)


__all__ = [
    "DEFAULT_ZONES",
    "ERROR_CODES",
    "GPU_MACHINE_TYPES",
    "INSTANCE_STATES",
    "GcpProvider",
    "error_for_code",
    "error_from_api",
    "error_from_operation",
    "from_environment",
]
