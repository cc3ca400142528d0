"""Amazon EC2 adapter over boto3 (EC2 + Price List APIs); does I/O: HTTPS to the AWS APIs.

API facts this module depends on (botocore 1.44 service models; EC2 API reference and user
guide; offer discovery is in :mod:`providers.aws_pricing`):

* ``RunInstances`` is idempotent on ``ClientToken`` (≤ 64 ASCII characters): a repeat with the
  same token returns the first instance. We send ``gpubroker-<instance_id>`` and also look the
  instance up by our tag first, so retries stay single even where the token is not honoured
  (moto ignores it). Once that instance has terminated, EC2 refuses the token with
  ``IdempotentInstanceTerminated``: an instance id launches at most once.
* Spot: ``InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType":
  "one-time", "InstanceInterruptionBehavior": "terminate", "MaxPrice": "..."}}``.
* Reservations: ``CapacityReservationSpecification={"CapacityReservationTarget":
  {"CapacityReservationId": ...}}``; a Capacity Block also needs ``InstanceMarketOptions=
  {"MarketType": "capacity-block"}`` (EC2 user guide, "Launch instances using Capacity Blocks"),
  and the instance must be in the reservation's zone, so we read the reservation first.
* ``ImageId`` may be ``resolve:ssm:<parameter>`` (EC2 resolves it at launch); the default is the
  public SSM parameter of the Deep Learning Base OSS NVIDIA driver AMI (Ubuntu 22.04).
* Preemption shows on the instance: state ``shutting-down``/``terminated`` with
  ``StateReason.Code == "Server.SpotInstanceTermination"`` (``Server.SpotInstanceShutdown`` for
  stop-on-interruption). The two-minute notice and rebalance recommendations are delivered only
  through instance metadata and EventBridge, not ``DescribeInstanceStatus`` (whose events are
  scheduled maintenance); the one API view of the notice is the spot request's status code
  ``marked-for-termination``/``marked-for-stop``, which we report as ``state_reason`` of a
  still-running instance.
* Errors are ``<Response><Errors><Error><Code>…`` XML with the codes in :data:`ERROR_CODES`.

The adapter makes one attempt per call (botocore ``total_max_attempts=1``: note that botocore's
``max_attempts`` counts *retries*, so ``max_attempts=1`` would send two requests). Zones are
availability-zone names (``us-east-1a``), per account, as ``Placement.AvailabilityZone`` takes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConfigNotFound,
    ConfigParseError,
    ConnectionError,  # botocore's: the base of its connect-timeout and endpoint errors
    CredentialRetrievalError,
    HTTPClientError,
    MetadataRetrievalError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
)

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
    INSTANCE_ID_PATTERN,
    NAME_PREFIX,
    TAG_INSTANCE_ID,
    TAG_MANAGED,
    TERMINAL_STATES,
    Capabilities,
    Instance,
    InstanceState,
    LaunchIdempotency,
    LaunchRequest,
    ProviderStatus,
    owned_instance_id,
)
from broker.core.types import CapacityType, Offer
from providers import aws_pricing

PROVIDER = "aws"
DEFAULT_REGIONS: tuple[str, ...] = ("us-east-1", "us-east-2", "us-west-2")
DEFAULT_IMAGE = (
    "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)
PRICE_CACHE_TTL = timedelta(hours=1)  # the Price List changes a few times a month
logger = logging.getLogger(__name__)
_Found = tuple[Instance, str | None]  # an instance and its spot request id

# EC2 instance-state-name → ours. ``shutting-down`` is on its way to terminated.
STATE_MAP: Mapping[str, InstanceState] = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "shutting-down": InstanceState.STOPPING,
    "stopping": InstanceState.STOPPING,
    "stopped": InstanceState.STOPPED,
    "terminated": InstanceState.TERMINATED,
}
LIVE_STATES = ("pending", "running", "stopping", "stopped")
# StateReason codes (EC2 API reference, StateReason) that change what an ending means.
PREEMPTION_REASONS = frozenset({"Server.SpotInstanceTermination", "Server.SpotInstanceShutdown"})
LAUNCH_FAILURE_REASONS = frozenset(
    {"Server.InsufficientInstanceCapacity", "Server.InternalError", "Client.InternalError",
     "Client.VolumeLimitExceeded", "Client.InvalidSnapshot.NotFound"}
)  # fmt: skip
# Spot request status codes of the two-minute interruption notice (EC2 user guide, "Spot request status").
SPOT_NOTICE_CODES = frozenset({"marked-for-termination", "marked-for-stop", "marked-for-stop-by-experiment"})

# The provider's error codes → our types: the one visible table. Sources: "Error codes for the
# Amazon EC2 API" (EC2 API reference: common client errors, action errors, server errors — the
# Insufficient*Capacity family are *server* errors, HTTP 500; RequestLimitExceeded is 503), the
# Price List API's JSON errors (botocore model), and the AWS-wide signing errors.
_CODES_BY_TYPE: Mapping[type[ProviderError], str] = {
    # No capacity of that kind right now (try another zone, type, time or market).
    InsufficientCapacity: """
        InsufficientInstanceCapacity InsufficientCapacity InsufficientHostCapacity
        InsufficientCapacityOnHost InsufficientReservedInstanceCapacity
        InsufficientReservedInstancesCapacity InsufficientAddressCapacity InsufficientVolumeCapacity
        InsufficientFreeAddressesInSubnet ReservationCapacityExceeded UnfulfillableCapacity
        SpotMaxPriceTooLow InvalidCapacityReservationState.PendingActivation
    """,
    # Account limits.
    QuotaExceeded: """
        InstanceLimitExceeded VcpuLimitExceeded MaxSpotInstanceCountExceeded
        SpotInstanceCountLimitExceeded VolumeLimitExceeded ResourceLimitExceeded
        MaxScheduledInstanceCapacityExceeded TagLimitExceeded
    """,
    # Credentials and permissions (RequestExpired: also expired temporary credentials).
    AuthError: """
        AuthFailure UnauthorizedOperation InvalidClientTokenId UnrecognizedClientException
        SignatureDoesNotMatch IncompleteSignature MissingAuthenticationToken ExpiredToken
        ExpiredTokenException RequestExpired AccessDenied AccessDeniedException OptInRequired
        Blocked AccountDisabled PendingVerification
    """,
    # Requests that a retry would not fix. IdempotentInstanceTerminated: our ClientToken's
    # instance was terminated, so this instance id cannot launch again.
    InvalidRequest: """
        InvalidParameterValue InvalidParameterCombination InvalidParameter InvalidParameterDependency
        MissingParameter UnknownParameter Unsupported UnsupportedOperation UnsupportedTenancy
        InvalidInstanceType InvalidAvailabilityZone InvalidZone.NotFound InvalidClientToken
        IdempotentParameterMismatch IdempotentInstanceTerminated InvalidCapacityReservationId.NotFound
        InvalidCapacityReservationId.Malformed InvalidInstanceID.Malformed InvalidLaunchTargets
        InvalidFilter FilterLimitExceeded InvalidPaginationToken InvalidMaxResults VPCIdNotSpecified
        VPCResourceNotSpecified TagPolicyViolation InvalidParameterException InvalidNextTokenException
        ValidationError ValidationException
    """,
    NotFound: "InvalidInstanceID.NotFound NotFoundException",
    # Throttling and server trouble: may pass.
    Transient: """
        RequestLimitExceeded Throttling ThrottlingException TooManyRequestsException
        ServiceUnavailable ServiceUnavailableException Unavailable InternalError InternalFailure
        ServerInternal InternalErrorException RetryableError ExpiredNextTokenException
        RequestTimeout RequestTimeoutException
    """,
}
ERROR_CODES: Mapping[str, type[ProviderError]] = {
    code: kind for kind, codes in _CODES_BY_TYPE.items() for code in codes.split()
}
# Code families: InvalidAMIID.Malformed/.NotFound/.Unavailable, InvalidSubnetID.NotFound, ...
ERROR_PREFIXES: tuple[tuple[str, type[ProviderError]], ...] = (
    ("InvalidAMIID.", InvalidRequest),
    ("InvalidSubnetID.", InvalidRequest),
    ("InvalidGroup.", InvalidRequest),
    ("InvalidGroupId.", InvalidRequest),
    ("InvalidKeyPair.", InvalidRequest),
    ("InvalidPlacementGroup.", InvalidRequest),
)
# botocore's "the credential chain failed" exceptions (profiles, SSO, role and metadata sources).
_CREDENTIAL_ERRORS = (
    NoCredentialsError, PartialCredentialsError, CredentialRetrievalError, ProfileNotFound, ConfigNotFound,
    ConfigParseError, SSOError, TokenRetrievalError, MetadataRetrievalError,
)  # fmt: skip
# AWS access key ids (AKIA… long-term, ASIA… temporary): kept out of every message we make.
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")


def error_type(code: str | None, status: int | None) -> type[ProviderError]:
    """Our error type for an AWS error code, falling back on the HTTP status."""
    if code:
        if code in ERROR_CODES:
            return ERROR_CODES[code]
        bare = code.removeprefix("Client.").removeprefix("Server.")
        if bare in ERROR_CODES:
            return ERROR_CODES[bare]
        for prefix, kind in ERROR_PREFIXES:
            if bare.startswith(prefix):
                return kind
    if status is not None:
        if status in (401, 403):
            return AuthError
        if status == 404:
            return NotFound
        if status == 429 or status >= 500:
            return Transient
        if 400 <= status < 500:
            return InvalidRequest
    return Transient


def redact(text: str) -> str:
    """The text without AWS access key ids."""
    return _ACCESS_KEY_ID.sub("[access-key-id]", text)


def translate(exc: Exception, *, region: str | None, operation: str) -> ProviderError:
    """The typed error for a botocore/boto3 exception."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "") or None
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        message = redact(f"{operation}: {error.get('Message') or code or 'error'}")
        return error_type(code, status)(message, provider=PROVIDER, region=region, code=code)
    name = type(exc).__name__
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return AuthError(
            f"{operation}: no usable AWS credentials ({name})", provider=PROVIDER, region=region, code=name
        )
    if isinstance(exc, HTTPClientError | ConnectionError):  # timeouts, refused, reset, DNS
        return Transient(f"{operation}: {name}", provider=PROVIDER, region=region, code=name)
    if isinstance(exc, ParamValidationError | NoRegionError):
        return InvalidRequest(redact(f"{operation}: {exc}"), provider=PROVIDER, region=region, code=name)
    if isinstance(exc, BotoCoreError):
        return Transient(redact(f"{operation}: {exc}"), provider=PROVIDER, region=region, code=name)
    return Transient(f"{operation}: unexpected {name}", provider=PROVIDER, region=region, code=name)


def client_token(instance_id: str) -> str:
    """The RunInstances ClientToken for our instance id: deterministic, ASCII, ≤ 64 characters."""
    token = NAME_PREFIX + instance_id
    assert len(token) <= 64 and token.isascii()
    return token


class AwsProvider:
    """GPU capacity on Amazon EC2: on-demand, spot, and capacity reservations / Capacity Blocks."""

    name = PROVIDER

    def __init__(
        self,
        *,
        session: boto3.session.Session | None = None,
        regions: Sequence[str] = DEFAULT_REGIONS,
        instance_types: Sequence[str] = aws_pricing.DEFAULT_GPU_INSTANCE_TYPES,
        default_image: str = DEFAULT_IMAGE,
        images: Mapping[str, str] | None = None,
        subnet_ids: Mapping[str, str] | None = None,
        security_group_ids: Sequence[str] = (),
        key_name: str | None = None,
        endpoint_url: str | None = None,
        pricing_endpoint_url: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        price_cache_ttl: timedelta = PRICE_CACHE_TTL,
    ) -> None:
        if not regions:
            raise ValueError("at least one region is needed")
        self._session = session or boto3.session.Session()
        self._regions = tuple(regions)
        self._instance_types = tuple(instance_types)
        self._default_image = default_image
        self._images = dict(images or {})  # region → AMI id (or resolve:ssm:...)
        self._subnet_ids = dict(subnet_ids or {})  # zone (or region) → subnet id
        self._security_group_ids = tuple(security_group_ids)
        self._key_name = key_name
        self._endpoint_url = endpoint_url
        self._pricing_endpoint_url = pricing_endpoint_url
        self._clock = clock
        self._config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent_extra="gpubroker/0.1",
        )
        self._price_cache_ttl = price_cache_ttl
        self._price_cache: dict[tuple[str, str], tuple[datetime, Decimal | None]] = {}
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.capabilities = Capabilities(
            capacity_types=frozenset(CapacityType),
            reservations=True,
            interruption_notice_seconds=120,
            availability_signal=True,  # for reserved offers (AvailableInstanceCount); others say UNKNOWN
            live_prices=True,
            launch_idempotency=LaunchIdempotency.CLIENT_TOKEN,
            regions=self._regions,
        )

    def __repr__(self) -> str:  # never show the session (it holds credentials)
        return f"AwsProvider(regions={list(self._regions)})"

    # --- plumbing -------------------------------------------------------------------------

    def _client(self, service: str, region: str) -> Any:
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                endpoint = self._pricing_endpoint_url if service == "pricing" else self._endpoint_url
                client = self._session.client(
                    service, region_name=region, endpoint_url=endpoint, config=self._config
                )
                self._clients[(service, region)] = client
            return client

    def _ec2(self, region: str) -> Any:
        return self._client("ec2", region)

    @contextmanager
    def _calling(self, operation: str, region: str | None) -> Iterator[None]:
        try:
            yield
        except ProviderError:
            raise
        except Exception as exc:  # every SDK failure leaves as one of our types
            error = translate(exc, region=region, operation=operation)
            logger.debug("aws %s in %s failed: %s", operation, region, error)
            raise error from exc

    # --- offers ---------------------------------------------------------------------------

    def list_offers(self, *, regions: Sequence[str] | None = None) -> list[Offer]:
        offers: list[Offer] = []
        for region in regions or self._regions:
            offers.extend(self._region_offers(region))
        return offers

    def _region_offers(self, region: str) -> list[Offer]:
        ec2 = self._ec2(region)
        now = self._clock()
        with self._calling("DescribeInstanceTypeOfferings", region):
            zones = aws_pricing.offered_zones(ec2, self._instance_types)
        if not zones:
            return []
        offered = sorted(zones)
        with self._calling("DescribeInstanceTypes", region):
            specs = aws_pricing.gpu_specs(ec2, offered)
        if not specs:
            return []
        with self._calling("DescribeSpotPriceHistory", region):
            spot = aws_pricing.latest_spot_prices(ec2, sorted(specs), now)
        reserved: list[aws_pricing.ReservedCapacity] = []
        try:
            with self._calling("DescribeCapacityReservations", region):
                reserved = aws_pricing.reserved_capacity(ec2, sorted(specs))
        except AuthError as exc:  # an IAM policy without ec2:DescribeCapacityReservations
            logger.warning("aws: no reserved offers in %s: %s", region, exc)
        on_demand = {}
        for itype in sorted(specs):
            price = self._on_demand_price(region, itype, now)
            if price is not None:
                on_demand[itype] = price
        return aws_pricing.build_offers(
            cloud=PROVIDER,
            region=region,
            zones=zones,
            specs=specs,
            on_demand=on_demand,
            spot=spot,
            reserved=reserved,
            observed_at=now,
        )

    def _on_demand_price(self, region: str, instance_type: str, now: datetime) -> Decimal | None:
        cached = self._price_cache.get((region, instance_type))
        if cached is not None and now - cached[0] < self._price_cache_ttl:
            return cached[1]
        pricing = self._client("pricing", aws_pricing.PRICING_REGION)
        with self._calling("GetProducts", region):
            price = aws_pricing.on_demand_price(pricing, region, instance_type)
        self._price_cache[(region, instance_type)] = (now, price)
        return price

    # --- instances ------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Instance:
        region = request.region
        existing = self._find(request.instance_id, region, live_only=True)
        if existing is not None:
            return existing
        params = self._run_params(request)
        with self._calling("RunInstances", region):
            response = self._ec2(region).run_instances(**params)
        instance = to_instance(response["Instances"][0], region)
        if instance is None:  # cannot happen: we tagged it
            raise InvalidRequest(
                "RunInstances returned an instance without our tags", provider=PROVIDER, region=region
            )
        return instance

    def _run_params(self, request: LaunchRequest) -> dict[str, Any]:
        region = request.region
        tags = {
            **dict(request.labels),
            "Name": request.name,
            TAG_MANAGED: "true",
            TAG_INSTANCE_ID: request.instance_id,
        }
        tag_list = [{"Key": key, "Value": value} for key, value in tags.items()]
        params: dict[str, Any] = {
            "ImageId": request.image or self._images.get(region) or self._default_image,
            "InstanceType": request.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": client_token(request.instance_id),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tag_list},
                {"ResourceType": "volume", "Tags": tag_list},
            ],
        }
        zone = request.zone
        if request.capacity_type is CapacityType.SPOT:
            spot_options: dict[str, Any] = {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            }
            if request.max_price_per_hour is not None:
                spot_options["MaxPrice"] = str(request.max_price_per_hour)
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot_options}
        elif request.capacity_type is CapacityType.RESERVED:
            reservation = self._reservation(region, str(request.reservation_id))
            params["CapacityReservationSpecification"] = {
                "CapacityReservationTarget": {"CapacityReservationId": request.reservation_id}
            }
            if reservation.get("ReservationType") == "capacity-block":
                params["InstanceMarketOptions"] = {"MarketType": "capacity-block"}
            zone = zone or reservation.get("AvailabilityZone")
        if zone:
            params["Placement"] = {"AvailabilityZone": zone}
        subnet = self._subnet_ids.get(zone or "") or self._subnet_ids.get(region)
        if subnet:
            params["SubnetId"] = subnet
        if self._security_group_ids:
            params["SecurityGroupIds"] = list(self._security_group_ids)
        if self._key_name:
            params["KeyName"] = self._key_name
        if request.ssh_public_key:  # cloud-init adds it; no key pair resource to create or clean up
            params["UserData"] = f"#cloud-config\nssh_authorized_keys:\n  - {request.ssh_public_key}\n"
        return params

    def _reservation(self, region: str, reservation_id: str) -> dict[str, Any]:
        with self._calling("DescribeCapacityReservations", region):
            found = self._ec2(region).describe_capacity_reservations(CapacityReservationIds=[reservation_id])
        reservations = found.get("CapacityReservations") or []
        if not reservations:
            raise InvalidRequest(
                f"no capacity reservation {reservation_id}",
                provider=PROVIDER,
                region=region,
                code="InvalidCapacityReservationId.NotFound",
            )
        return reservations[0]

    def get_instance(self, instance_id: str, *, region: str) -> Instance | None:
        return self._find(instance_id, region, live_only=False)

    def _find(self, instance_id: str, region: str, *, live_only: bool) -> Instance | None:
        filters = [{"Name": f"tag:{TAG_INSTANCE_ID}", "Values": [instance_id]}]
        if live_only:
            filters.append({"Name": "instance-state-name", "Values": list(LIVE_STATES)})
        found = self._describe(region, filters)
        if not found:
            return None
        return self._with_spot_notices(region, [_preferred(found)])[0]

    def list_instances(self, *, regions: Sequence[str] | None = None) -> list[Instance]:
        listed: list[Instance] = []
        for region in regions or self._regions:
            found = self._describe(region, [{"Name": f"tag:{TAG_MANAGED}", "Values": ["true"]}])
            by_id: dict[str, list[_Found]] = {}
            for item in found:
                by_id.setdefault(item[0].instance_id, []).append(item)
            listed.extend(self._with_spot_notices(region, [_preferred(group) for group in by_id.values()]))
        return listed

    def _describe(self, region: str, filters: list[dict[str, Any]]) -> list[_Found]:
        found: list[_Found] = []
        with self._calling("DescribeInstances", region):
            pages = self._ec2(region).get_paginator("describe_instances").paginate(Filters=filters)
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for raw in reservation.get("Instances", []):
                        instance = to_instance(raw, region)
                        if instance is not None:
                            found.append((instance, raw.get("SpotInstanceRequestId") or None))
        return found

    def _with_spot_notices(self, region: str, found: Sequence[_Found]) -> list[Instance]:
        """Running spot instances whose request is marked for interruption get that as state_reason."""
        watched = {
            sir: instance
            for instance, sir in found
            if sir and instance.capacity_type is CapacityType.SPOT and instance.state is InstanceState.RUNNING
        }
        if not watched:
            return [instance for instance, _ in found]
        try:
            with self._calling("DescribeSpotInstanceRequests", region):
                answer = self._ec2(region).describe_spot_instance_requests(
                    SpotInstanceRequestIds=sorted(watched)
                )
        except ProviderError as exc:  # the notice is extra: the instances themselves are known
            logger.warning("aws: spot request status unavailable in %s: %s", region, exc)
            return [instance for instance, _ in found]
        marked = {
            watched[raw["SpotInstanceRequestId"]].provider_instance_id: raw["Status"]["Code"]
            for raw in answer.get("SpotInstanceRequests", [])
            if raw.get("SpotInstanceRequestId") in watched
            and (raw.get("Status") or {}).get("Code") in SPOT_NOTICE_CODES
        }
        return [
            replace(instance, state_reason=marked[instance.provider_instance_id])
            if instance.provider_instance_id in marked
            else instance
            for instance, _ in found
        ]

    def terminate(self, instance_id: str, *, region: str) -> None:
        filters = [
            {"Name": f"tag:{TAG_INSTANCE_ID}", "Values": [instance_id]},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ]
        targets = sorted(instance.provider_instance_id for instance, _ in self._describe(region, filters))
        if not targets:
            return
        try:
            with self._calling("TerminateInstances", region):
                self._ec2(region).terminate_instances(InstanceIds=targets)
        except NotFound:
            return  # gone between the look-up and the call: done

    def check(self) -> ProviderStatus:
        region = self._regions[0]
        try:
            if self._session.get_credentials() is None:
                return ProviderStatus(
                    PROVIDER,
                    configured=False,
                    reachable=False,
                    detail="no AWS credentials in the default chain",
                )
            with self._calling("DescribeAvailabilityZones", region):
                zones = self._ec2(region).describe_availability_zones()
        except AuthError as exc:
            return ProviderStatus(PROVIDER, configured=True, reachable=True, detail=f"refused: {exc}")
        except ProviderError as exc:
            return ProviderStatus(PROVIDER, configured=True, reachable=False, detail=str(exc))
        except Exception as exc:  # check() never raises
            return ProviderStatus(
                PROVIDER,
                configured=True,
                reachable=False,
                detail=str(translate(exc, region=region, operation="check")),
            )
        count = len(zones.get("AvailabilityZones", []))
        return ProviderStatus(PROVIDER, configured=True, reachable=True, detail=f"{region}: {count} zones")


def to_instance(raw: Mapping[str, Any], region: str) -> Instance | None:
    """Our Instance for one DescribeInstances/RunInstances item, or None when it is not ours."""
    tags = {t.get("Key"): t.get("Value") for t in raw.get("Tags") or []}
    ours = tags.get(TAG_INSTANCE_ID)
    instance_id = ours if ours and INSTANCE_ID_PATTERN.match(ours) else owned_instance_id(tags.get("Name"))
    if instance_id is None:
        return None
    lifecycle = raw.get("InstanceLifecycle")
    if lifecycle == "spot":
        capacity = CapacityType.SPOT
    elif lifecycle == "capacity-block" or raw.get("CapacityReservationId"):
        capacity = CapacityType.RESERVED
    else:
        capacity = CapacityType.ON_DEMAND
    launched = raw.get("LaunchTime")
    return Instance(
        provider=PROVIDER,
        instance_id=instance_id,
        provider_instance_id=raw["InstanceId"],
        instance_type=raw.get("InstanceType", ""),
        region=region,
        zone=(raw.get("Placement") or {}).get("AvailabilityZone"),
        capacity_type=capacity,
        state=instance_state(raw),
        launched_at=launched.astimezone(UTC) if isinstance(launched, datetime) else None,
        state_reason=(raw.get("StateReason") or {}).get("Code") or None,
        public_ip=raw.get("PublicIpAddress"),
    )


def instance_state(raw: Mapping[str, Any]) -> InstanceState:
    """Our state for one DescribeInstances item: the state table, then what the reason says."""
    name = (raw.get("State") or {}).get("Name", "")
    state = STATE_MAP.get(name, InstanceState.UNKNOWN)
    reason = (raw.get("StateReason") or {}).get("Code") or ""
    if reason in PREEMPTION_REASONS and name in ("shutting-down", "terminated", "stopping", "stopped"):
        return InstanceState.PREEMPTED
    if reason in LAUNCH_FAILURE_REASONS and name in ("shutting-down", "terminated"):
        return InstanceState.FAILED
    return state


def _preferred(found: Sequence[_Found]) -> _Found:
    """Of several instances with our id, the live one, else the newest."""
    epoch = datetime.min.replace(tzinfo=UTC)
    return max(found, key=lambda item: (item[0].state not in TERMINAL_STATES, item[0].launched_at or epoch))


def from_environment(environ: Mapping[str, str] | None = None) -> AwsProvider | None:
    """The adapter from boto3's default credential chain (environment, profile, SSO, instance
    role), or None when it finds none; AuthError when they cannot be loaded (a missing profile,
    a failing SSO or role source). ``GPUBROKER_AWS_REGIONS`` (comma-separated)
    picks the regions (default us-east-1, us-east-2, us-west-2); ``GPUBROKER_AWS_IMAGE`` the
    default AMI (an id or ``resolve:ssm:...``)."""
    env = os.environ if environ is None else environ
    try:
        if environ is None:
            session = boto3.session.Session()
        else:  # an explicit mapping: its keys and profile, not the process environment's
            session = boto3.session.Session(
                aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
                aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
                aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
                profile_name=env.get("AWS_PROFILE") or None,
            )
        if session.get_credentials() is None:
            return None
    except (BotoCoreError, ClientError) as exc:  # e.g. AWS_PROFILE names no profile: misconfigured
        raise translate(exc, region=None, operation="load credentials") from exc
    regions = tuple(r.strip() for r in env.get("GPUBROKER_AWS_REGIONS", "").split(",") if r.strip())
    image = env.get("GPUBROKER_AWS_IMAGE", "").strip() or DEFAULT_IMAGE
    return AwsProvider(session=session, regions=regions or DEFAULT_REGIONS, default_image=image)


__all__ = [
    "DEFAULT_IMAGE", "DEFAULT_REGIONS", "ERROR_CODES", "LIVE_STATES", "PREEMPTION_REASONS", "STATE_MAP",
    "AwsProvider", "client_token", "error_type", "from_environment", "instance_state", "redact",
    "to_instance", "translate",
]  # fmt: skip
