"""A faithful offline AWS for the adapter's tests: moto's EC2 plus what moto lacks (no network at all).

moto (``mock_aws``) keeps the EC2 state and its real catalogue data (instance-type offerings per
zone, ``DescribeInstanceTypes`` with GpuInfo), and runs RunInstances / DescribeInstances /
TerminateInstances. This fake owns the transport of the boto3 session it hands out: every
request passes through :meth:`AwsFake.send`, a botocore ``before-send`` handler that stands in
for moto's own. It records the request as sent on the wire, answers scripted errors with EC2's
XML error body (``<Response><Errors><Error><Code>``, HTTP status as EC2 sends it) or the Price
List API's JSON one (``{"__type", "Message"}``), loses responses after the work is done (moto
creates the instance, the client gets a ``ReadTimeoutError``), and serves what moto lacks:

* Price List ``GetProducts``: PriceList items as JSON strings, TERM_MATCH filters, NextToken pages;
* ``DescribeSpotPriceHistory`` with a price history per zone (moto answers a constant 0.00001),
  honouring ``StartTime`` the way EC2 does (the last change before it, and all after);
* ``DescribeCapacityReservations`` (moto has none) and launches into them: RunInstances with a
  ``CapacityReservationTarget`` takes a slot or fails with ``ReservationCapacityExceeded``;
* ``DescribeSpotInstanceRequests`` for the one-time spot requests RunInstances makes (moto makes
  none; here each spot instance gets its ``sir-`` id, and :meth:`AwsFake.notice` marks it).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from string import Template
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import boto3
import botocore.loaders
import botocore.session
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ReadTimeoutError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.botocore_stubber import MockRawResponse
from moto.core.models import botocore_stubber
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason

ACCOUNT_ID = DEFAULT_ACCOUNT_ID
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example key pair
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLEsessionTOKENvalue"
EC2_XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
# One botocore loader for every session the fake makes: it caches the parsed service models (the
# EC2 one is megabytes of JSON), which a fresh session would otherwise parse again for each test.
_LOADER = botocore.loaders.create_loader()

# Error kind → (code, HTTP status, message) as EC2 answers it (EC2 API reference, "Error codes").
EC2_ERRORS: dict[str, tuple[str, int, str]] = {
    "capacity": (
        "InsufficientInstanceCapacity",
        500,
        "We currently do not have sufficient p5.48xlarge capacity in the Availability Zone you requested "
        "(us-east-1a). Our system will be working on provisioning additional capacity.",
    ),
    "quota": (
        "VcpuLimitExceeded",
        400,
        "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the instance "
        "bucket that the specified instance type belongs to.",
    ),
    "auth": ("UnauthorizedOperation", 403, "You are not authorized to perform this operation."),
    "invalid": ("InvalidParameterValue", 400, "Invalid value 'p5.49xlarge' for InstanceType."),
    "throttle": ("RequestLimitExceeded", 503, "Request limit exceeded."),
    "server": ("InternalError", 500, "An internal error has occurred"),
}
# The Price List API (JSON 1.1 protocol): code in ``__type``.
PRICING_ERRORS: dict[str, tuple[str, int, str]] = {
    "auth": ("AccessDeniedException", 400, "User is not authorized to perform: pricing:GetProducts"),
    "throttle": ("ThrottlingException", 400, "Rate exceeded"),
    "server": ("InternalErrorException", 500, "An internal error occurred"),
    "invalid": ("InvalidParameterException", 400, "Invalid filter: unknownField"),
}


@dataclass(frozen=True)
class Call:
    """One request as it went over the wire: query parameters (EC2) or the JSON body (Price List)."""

    service: str
    operation: str
    region: str
    params: dict[str, Any]


@dataclass
class SpotPricePoint:
    zone: str
    instance_type: str
    price: str
    timestamp: datetime
    product: str = "Linux/UNIX"


@dataclass
class CapacityReservation:
    reservation_id: str
    instance_type: str
    zone: str
    total: int
    available: int
    reservation_type: str = "default"  # or "capacity-block"
    state: str = "active"
    platform: str = "Linux/UNIX"
    tenancy: str = "default"
    start: datetime = NOW - timedelta(days=1)
    end: datetime = NOW + timedelta(days=6)


@dataclass
class SpotRequest:
    request_id: str
    instance_id: str
    zone: str
    max_price: str
    code: str = "fulfilled"
    message: str = "Your spot request is fulfilled."


@dataclass
class _Scripted:
    kind: str  # "error" | "lose"
    code: str = ""
    status: int = 0
    message: str = ""


def ec2_error_body(code: str, message: str) -> bytes:
    """EC2's error document (EC2 API reference, "Example error response")."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"</Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


# One AmazonEC2 PriceList item as the Price List API sends it (a JSON string per product; format
# aws_v1), with the attributes of a real p5.48xlarge product and one Reserved term besides OnDemand.
_PRODUCT = Template("""{"product": {"productFamily": "Compute Instance", "attributes": {
  "enhancedNetworkingSupported": "Yes", "intelTurboAvailable": "No", "memory": "$memory",
  "dedicatedEbsThroughput": "80000 Mbps", "vcpu": "$vcpu", "classicnetworkingsupport": "false",
  "capacitystatus": "$capacitystatus", "locationType": "AWS Region", "storage": "8 x 3840 SSD",
  "instanceFamily": "GPU instance", "operatingSystem": "$os", "intelAvx2Available": "No",
  "regionCode": "$region", "physicalProcessor": "AMD EPYC 7R13 Processor", "clockSpeed": "3.6 GHz",
  "ecu": "NA", "networkPerformance": "3200 Gigabit", "servicename": "Amazon Elastic Compute Cloud",
  "gpuMemory": "640 GB HBM3", "vpcnetworkingsupport": "true", "instanceType": "$itype",
  "tenancy": "$tenancy", "usagetype": "$usagetype", "normalizationSizeFactor": "384",
  "intelAvxAvailable": "No", "processorFeatures": "AMD Turbo; AVX; AVX2", "servicecode": "AmazonEC2",
  "licenseModel": "No License required", "currentGeneration": "Yes", "preInstalledSw": "$sw",
  "location": "$location", "processorArchitecture": "64-bit", "marketoption": "OnDemand",
  "operation": "$operation", "availabilityzone": "NA", "gpu": "$gpu"}, "sku": "$sku"},
 "serviceCode": "AmazonEC2",
 "terms": {
  "OnDemand": {"$sku.JRTCKXETXF": {"priceDimensions": {"$sku.JRTCKXETXF.6YS6EN2CT7": {
    "unit": "Hrs", "endRange": "Inf", "description": "$$$usd per On Demand $os $itype Instance Hour",
    "appliesTo": [], "rateCode": "$sku.JRTCKXETXF.6YS6EN2CT7", "beginRange": "0",
    "pricePerUnit": {"USD": "$usd"}}},
   "sku": "$sku", "effectiveDate": "2026-11-01T00:00:00Z", "offerTermCode": "JRTCKXETXF",
   "termAttributes": {}}},
  "Reserved": {"$sku.4NA7Y494T4": {"priceDimensions": {"$sku.4NA7Y494T4.6YS6EN2CT7": {
    "unit": "Hrs", "endRange": "Inf", "description": "$os (Amazon VPC), 1yr, No Upfront",
    "appliesTo": [], "rateCode": "$sku.4NA7Y494T4.6YS6EN2CT7", "beginRange": "0",
    "pricePerUnit": {"USD": "36.1200000000"}}},
   "sku": "$sku", "effectiveDate": "2026-11-01T00:00:00Z", "offerTermCode": "4NA7Y494T4",
   "termAttributes": {"LeaseContractLength": "1yr", "OfferingClass": "standard",
                      "PurchaseOption": "No Upfront"}}}},
 "version": "20261101000000", "publicationDate": "2026-11-01T00:00:00Z"}""")
_LOCATIONS = {"us-east-1": ("", "US East (N. Virginia)"), "us-east-2": ("USE2-", "US East (Ohio)"),
              "us-west-2": ("USW2-", "US West (Oregon)")}  # fmt: skip
_USAGE = {"Used": "BoxUsage", "UnusedCapacityReservation": "UnusedBox",
          "AllocatedCapacityReservation": "Reservation"}  # fmt: skip


def pricing_product(
    instance_type: str,
    region: str,
    usd: str,
    *,
    operating_system: str = "Linux",
    tenancy: str = "Shared",
    pre_installed_sw: str = "NA",
    capacity_status: str = "Used",
    operation: str = "RunInstances",
    vcpu: str = "192",
    memory: str = "2048 GiB",
) -> dict[str, Any]:
    """One AmazonEC2 PriceList document (parsed), for a type, region and product variant."""
    variant = f"{instance_type}/{region}/{operating_system}/{tenancy}/{pre_installed_sw}/{capacity_status}"
    prefix, location = _LOCATIONS[region]
    usage = "DedicatedUsage" if tenancy == "Dedicated" else _USAGE[capacity_status]
    text = _PRODUCT.substitute(
        sku=uuid.uuid5(uuid.NAMESPACE_URL, variant).hex[:16].upper(), itype=instance_type, region=region,
        usd=usd, os=operating_system, tenancy=tenancy, sw=pre_installed_sw, capacitystatus=capacity_status,
        operation=operation, vcpu=vcpu, memory=memory, gpu="8", location=location,
        usagetype=f"{prefix}{usage}:{instance_type}",
    )  # fmt: skip
    return json.loads(text)


def default_products() -> list[dict[str, Any]]:
    """On-demand prices after AWS's June 2025 P4/P5 price cut, plus products the filters must skip."""
    products = []
    for region in _LOCATIONS:
        products += [
            pricing_product("p5.48xlarge", region, "55.0400000000"),
            pricing_product("p4d.24xlarge", region, "21.9576420000", vcpu="96", memory="1152 GiB"),
            pricing_product("p5en.48xlarge", region, "63.2960000000"),
            # The same type as other products: a reader matching on the type alone picks one of these.
            pricing_product("p5.48xlarge", region, "63.8720000000", operating_system="Windows",
                            operation="RunInstances:0002"),
            pricing_product("p5.48xlarge", region, "60.5440000000", tenancy="Dedicated"),
            pricing_product("p5.48xlarge", region, "55.0400000000",
                            capacity_status="AllocatedCapacityReservation"),
            pricing_product("p5.48xlarge", region, "72.3100000000", pre_installed_sw="SQL Std",
                            operation="RunInstances:0004"),
        ]  # fmt: skip
    return products


def default_spot_prices() -> dict[str, list[SpotPricePoint]]:
    """A few hours of spot price history per zone (the newest point per zone is the current price)."""
    history: dict[str, list[SpotPricePoint]] = defaultdict(list)
    points = [
        ("us-east-1", "us-east-1a", "p5.48xlarge", ["31.464800", "29.981300"]),
        ("us-east-1", "us-east-1b", "p5.48xlarge", ["33.010500", "34.557900"]),
        ("us-east-1", "us-east-1c", "p5.48xlarge", ["28.802700"]),
        ("us-east-1", "us-east-1a", "p4d.24xlarge", ["9.880300", "10.125400"]),
        ("us-east-1", "us-east-1d", "p4d.24xlarge", ["11.025000"]),
        ("us-west-2", "us-west-2a", "p5.48xlarge", ["27.115600"]),
        ("us-west-2", "us-west-2b", "p5.48xlarge", ["30.246100", "26.870200"]),
    ]
    for region, zone, itype, prices in points:
        for age, price in enumerate(reversed(prices)):
            stamp = NOW - timedelta(hours=3 * age + 1, minutes=17)
            history[region].append(SpotPricePoint(zone, itype, price, stamp))
            # Windows prices are in the same history; ProductDescriptions must filter them out.
            history[region].append(SpotPricePoint(zone, itype, "99.000000", stamp, "Windows"))
    return history


class AwsFake:
    """The scriptable AWS: build it inside ``mock_aws()``, hand :meth:`session` to the adapter."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.products: list[dict[str, Any]] = default_products()
        self.spot_prices: dict[str, list[SpotPricePoint]] = default_spot_prices()
        self.reservations: dict[str, list[CapacityReservation]] = defaultdict(list)
        self.spot_requests: dict[str, list[SpotRequest]] = defaultdict(list)
        self.page_size = 1000  # server-side page size of the operations served here
        self._scripted: dict[str, deque[_Scripted]] = defaultdict(deque)

    # --- wiring -----------------------------------------------------------------------------

    def session(self, *, with_token: bool = True) -> boto3.session.Session:
        """A boto3 session whose requests all go through :meth:`send` (not moto's own handler)."""
        core = botocore.session.get_session()
        core.register_component("data_loader", _LOADER)
        session = boto3.session.Session(
            botocore_session=core,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            aws_session_token=SESSION_TOKEN if with_token else None,
            region_name="us-east-1",
        )
        session.events.unregister("before-send", botocore_stubber)
        session.events.register("before-send", self.send)
        return session

    # --- levers -----------------------------------------------------------------------------

    def fail_next(self, operation: str, code: str, status: int, message: str = "") -> None:
        """The next ``operation`` (e.g. "RunInstances", "GetProducts") answers with this error."""
        self._scripted[operation].append(_Scripted("error", code, status, message or code))

    def fail_next_kind(self, operation: str, kind: str) -> None:
        table = PRICING_ERRORS if operation == "GetProducts" else EC2_ERRORS
        code, status, message = table[kind]
        self.fail_next(operation, code, status, message)

    def lose_next(self, operation: str) -> None:
        """The next ``operation`` is carried out, but the client times out before the answer."""
        self._scripted[operation].append(_Scripted("lose"))

    def backend(self, region: str) -> Any:
        return ec2_backends[ACCOUNT_ID][region]

    def instances(self, region: str, instance_id: str | None = None) -> list[Any]:
        """moto's instance objects in a region (ours with that id, when given)."""
        found = self.backend(region).all_instances()
        if instance_id is None:
            return list(found)
        return [i for i in found if _tag(i, "gpubroker-instance-id") == instance_id]

    def live_instance_count(self, regions: tuple[str, ...] = ("us-east-1", "us-east-2", "us-west-2")) -> int:
        return sum(1 for region in regions for i in self.instances(region) if i.state not in ("terminated",))

    def preempt(self, region: str, instance_id: str) -> None:
        """EC2 reclaims the spot instance: terminated, StateReason Server.SpotInstanceTermination."""
        for instance in self.instances(region, instance_id):
            if instance.state == "terminated":
                continue
            instance.terminate()
            instance._reason = f"Service initiated ({NOW:%Y-%m-%d %H:%M:%S} GMT)"
            instance.state_reason = StateReason(
                "Server.SpotInstanceTermination: Spot instance termination", "Server.SpotInstanceTermination"
            )
            for request in self.spot_requests[region]:
                if request.instance_id == instance.id:
                    request.code = "instance-terminated-no-capacity"
                    request.message = "Your Spot Instance was interrupted: no spare capacity."

    def notice(self, region: str, instance_id: str) -> None:
        """The two-minute interruption notice: the spot request is marked for termination."""
        ids = {i.id for i in self.instances(region, instance_id)}
        for request in self.spot_requests[region]:
            if request.instance_id in ids:
                request.code = "marked-for-termination"
                request.message = "Your Spot Instance is marked for termination."

    def calls_to(self, operation: str) -> list[Call]:
        return [c for c in self.calls if c.operation == operation]

    # --- the transport ----------------------------------------------------------------------

    def send(self, request: AWSPreparedRequest, event_name: str = "", **_: Any) -> AWSResponse:
        _, service, operation = event_name.split(".", 2)
        region = _region(request)
        body = request.body or b""
        text = body.decode() if isinstance(body, bytes) else str(body)
        params: dict[str, Any] = json.loads(text or "{}") if service == "pricing" else dict(parse_qsl(text))
        self.calls.append(Call(service, operation, region, params))
        scripted = self._scripted[operation].popleft() if self._scripted[operation] else None
        if scripted is not None and scripted.kind == "error":
            return self._error(request, scripted.code, scripted.status, scripted.message, service)
        served = {
            "GetProducts": self._get_products,
            "DescribeSpotPriceHistory": self._spot_price_history,
            "DescribeCapacityReservations": self._capacity_reservations,
            "DescribeSpotInstanceRequests": self._spot_instance_requests,
            "RunInstances": self._run_instances,
        }.get(operation)
        response = served(request, region, params) if served else self._moto(request, event_name)
        if scripted is not None and scripted.kind == "lose":
            raise ReadTimeoutError(endpoint_url=request.url)
        return response

    def _moto(self, request: AWSPreparedRequest, event_name: str) -> AWSResponse:
        response = botocore_stubber(event_name=event_name, request=request)
        assert response is not None, f"moto did not answer {event_name}"
        return response

    def _error(
        self, request: AWSPreparedRequest, code: str, status: int, message: str, service: str = "ec2"
    ) -> AWSResponse:
        if service == "pricing":
            body = json.dumps({"__type": code, "Message": message}).encode()
            headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": str(uuid.uuid4())}
        else:
            body = ec2_error_body(code, message)
            headers = {"Content-Type": "text/xml;charset=UTF-8", "Server": "AmazonEC2"}
        return _answer(request, status, headers, body)

    def _xml(self, request: AWSPreparedRequest, operation: str, inner: str) -> AWSResponse:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<{operation}Response xmlns="{EC2_XMLNS}">'
            f"<requestId>{uuid.uuid4()}</requestId>{inner}</{operation}Response>"
        ).encode()
        return _answer(request, 200, {"Content-Type": "text/xml;charset=UTF-8"}, body)

    def _page(self, items: list[Any], params: dict[str, Any]) -> tuple[list[Any], str]:
        start = int(params.get("NextToken") or 0)
        size = min(int(params.get("MaxResults") or self.page_size), self.page_size)
        end = start + size
        return items[start:end], (str(end) if end < len(items) else "")

    # --- operations moto lacks ------------------------------------------------------------

    def _get_products(self, request: AWSPreparedRequest, region: str, params: dict[str, Any]) -> AWSResponse:
        assert region == "us-east-1", "the Price List API is called in us-east-1"
        terms = [(f["Field"], f["Value"]) for f in params.get("Filters", []) if f["Type"] == "TERM_MATCH"]
        matched = [
            json.dumps(product)  # PriceList items are JSON strings, not objects
            for product in self.products
            if product["serviceCode"] == params.get("ServiceCode")
            and all(product["product"]["attributes"].get(name) == value for name, value in terms)
        ]
        page, token = self._page(matched, params)
        answer: dict[str, Any] = {"FormatVersion": params.get("FormatVersion", "aws_v1"), "PriceList": page}
        if token:
            answer["NextToken"] = token
        return _answer(
            request, 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(answer).encode()
        )

    def _spot_price_history(
        self, request: AWSPreparedRequest, region: str, params: dict[str, Any]
    ) -> AWSResponse:
        types = _listed(params, "InstanceType")
        products = _listed(params, "ProductDescription")
        start = _parse_time(params["StartTime"]) if "StartTime" in params else None
        zone_ids = {z.name: z.zone_id for z in self.backend(region).describe_availability_zones()}
        points = [
            p
            for p in self.spot_prices[region]
            if (not types or p.instance_type in types) and (not products or p.product in products)
        ]
        if start is not None:  # EC2: prices from StartTime on, plus the last change before it
            before: dict[tuple[str, str, str], SpotPricePoint] = {}
            for p in points:
                key = (p.zone, p.instance_type, p.product)
                if p.timestamp <= start and (key not in before or p.timestamp > before[key].timestamp):
                    before[key] = p
            points = [p for p in points if p.timestamp > start] + list(before.values())
        points.sort(key=lambda p: p.timestamp, reverse=True)
        page, token = self._page(points, params)
        items = "".join(
            f"<item><instanceType>{p.instance_type}</instanceType><productDescription>{escape(p.product)}"
            f"</productDescription><spotPrice>{p.price}</spotPrice><timestamp>{_iso(p.timestamp)}</timestamp>"
            f"<availabilityZone>{p.zone}</availabilityZone>"
            f"<availabilityZoneId>{zone_ids.get(p.zone, '')}</availabilityZoneId></item>"
            for p in page
        )
        return self._xml(
            request,
            "DescribeSpotPriceHistory",
            f"<spotPriceHistorySet>{items}</spotPriceHistorySet><nextToken>{token}</nextToken>",
        )

    def _capacity_reservations(
        self, request: AWSPreparedRequest, region: str, params: dict[str, Any]
    ) -> AWSResponse:
        wanted = _listed(params, "CapacityReservationId")
        filters = _filters(params)
        known = {r.reservation_id: r for r in self.reservations[region]}
        for rid in wanted:
            if rid not in known:
                return self._error(request, *_no_reservation(rid))
        rows = [r for r in self.reservations[region] if not wanted or r.reservation_id in wanted]
        fields = {"state": "state", "instance-type": "instance_type", "availability-zone": "zone",
                  "instance-platform": "platform", "tenancy": "tenancy"}  # fmt: skip
        for name, values in filters.items():
            rows = [r for r in rows if getattr(r, fields[name]) in values]
        zone_ids = {z.name: z.zone_id for z in self.backend(region).describe_availability_zones()}
        page, token = self._page(rows, params)
        items = "".join(
            f"<item><capacityReservationId>{r.reservation_id}</capacityReservationId><ownerId>{ACCOUNT_ID}"
            f"</ownerId><capacityReservationArn>arn:aws:ec2:{region}:{ACCOUNT_ID}:capacity-reservation/"
            f"{r.reservation_id}</capacityReservationArn><availabilityZoneId>{zone_ids.get(r.zone, '')}"
            f"</availabilityZoneId><instanceType>{r.instance_type}</instanceType><instancePlatform>"
            f"{escape(r.platform)}</instancePlatform><availabilityZone>{r.zone}</availabilityZone><tenancy>"
            f"{r.tenancy}</tenancy><totalInstanceCount>{r.total}</totalInstanceCount><availableInstanceCount>"
            f"{r.available}</availableInstanceCount><ebsOptimized>true</ebsOptimized><ephemeralStorage>false"
            f"</ephemeralStorage><state>{r.state}</state><startDate>{_iso(r.start)}</startDate><endDate>"
            f"{_iso(r.end)}</endDate><endDateType>limited</endDateType><instanceMatchCriteria>targeted"
            f"</instanceMatchCriteria><createDate>{_iso(r.start)}</createDate><tagSet/><reservationType>"
            f"{r.reservation_type}</reservationType></item>"
            for r in page
        )
        inner = f"<capacityReservationSet>{items}</capacityReservationSet>"
        return self._xml(
            request,
            "DescribeCapacityReservations",
            inner + (f"<nextToken>{token}</nextToken>" if token else ""),
        )

    def _spot_instance_requests(
        self, request: AWSPreparedRequest, region: str, params: dict[str, Any]
    ) -> AWSResponse:
        wanted = _listed(params, "SpotInstanceRequestId")
        rows = [r for r in self.spot_requests[region] if not wanted or r.request_id in wanted]
        items = "".join(
            f"<item><spotInstanceRequestId>{r.request_id}</spotInstanceRequestId><spotPrice>{r.max_price}"
            f"</spotPrice><type>one-time</type><state>active</state><status><code>{r.code}</code><updateTime>"
            f"{_iso(NOW)}</updateTime><message>{escape(r.message)}</message></status><instanceId>"
            f"{r.instance_id}</instanceId><createTime>{_iso(NOW)}</createTime><productDescription>Linux/UNIX"
            f"</productDescription><launchedAvailabilityZone>{r.zone}</launchedAvailabilityZone>"
            f"<instanceInterruptionBehavior>terminate</instanceInterruptionBehavior></item>"
            for r in rows
        )
        return self._xml(
            request,
            "DescribeSpotInstanceRequests",
            f"<spotInstanceRequestSet>{items}</spotInstanceRequestSet>",
        )

    def _run_instances(self, request: AWSPreparedRequest, region: str, params: dict[str, Any]) -> AWSResponse:
        """moto launches; the fake adds what moto leaves out (spot request ids, reservations)."""
        reservation_id = params.get(
            "CapacityReservationSpecification.CapacityReservationTarget.CapacityReservationId"
        )
        reservation = None
        if reservation_id:
            reservation = next(
                (r for r in self.reservations[region] if r.reservation_id == reservation_id), None
            )
            if reservation is None:
                return self._error(request, *_no_reservation(reservation_id))
            if reservation.available < int(params.get("MinCount", 1)):
                message = "The targeted Capacity Reservation does not have enough available capacity."
                return self._error(request, "ReservationCapacityExceeded", 400, message)
        response = self._moto(request, f"before-send.ec2.{params['Action']}")
        if response.status_code != 200:
            return response
        body = response.content.decode()
        instance_id = re.search(r"<instanceId>(i-[0-9a-f]+)</instanceId>", body)
        assert instance_id
        instance = self.backend(region).get_instance(instance_id.group(1))
        extra = ""
        market = params.get("InstanceMarketOptions.MarketType")
        if market == "spot":
            request_id = f"sir-{uuid.uuid4().hex[:8]}"
            instance.spot_instance_request_id = request_id
            max_price = params.get("InstanceMarketOptions.SpotOptions.MaxPrice", "55.040000")
            self.spot_requests[region].append(
                SpotRequest(request_id, instance.id, instance.placement.zone or "", max_price)
            )
            extra = f"<spotInstanceRequestId>{request_id}</spotInstanceRequestId>"
        if reservation is not None:
            reservation.available -= 1
            instance.capacity_reservation_id = reservation.reservation_id
            instance.lifecycle = "capacity-block" if market == "capacity-block" else None
            extra = f"<capacityReservationId>{reservation.reservation_id}</capacityReservationId>"
            body = re.sub(
                r"<instanceLifecycle>[^<]*</instanceLifecycle>",
                f"<instanceLifecycle>{instance.lifecycle}</instanceLifecycle>" if instance.lifecycle else "",
                body,
                count=1,
            )
        if extra:
            body = body.replace("</instanceId>", "</instanceId>" + extra, 1)
        return AWSResponse(request.url, 200, dict(response.headers), MockRawResponse(body.encode()))


def _no_reservation(reservation_id: str) -> tuple[str, int, str]:
    return (
        "InvalidCapacityReservationId.NotFound",
        400,
        f"The capacity reservation ID '{reservation_id}' does not exist",
    )


def _answer(request: AWSPreparedRequest, status: int, headers: dict[str, str], body: bytes) -> AWSResponse:
    return AWSResponse(request.url, status, headers, MockRawResponse(body))


def _tag(instance: Any, key: str) -> str | None:
    for tag in instance.get_tags():
        if tag.get("key", tag.get("Key")) == key:
            return tag.get("value", tag.get("Value"))
    return None


def _region(request: AWSPreparedRequest) -> str:
    host = re.search(r"//(?:api\.pricing|ec2)\.([a-z0-9-]+)\.amazonaws\.com", request.url)
    if host:
        return host.group(1)
    scope = re.search(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/", str(request.headers.get("Authorization", "")))
    return scope.group(1) if scope else "us-east-1"


def _listed(params: dict[str, Any], name: str) -> list[str]:
    """EC2 query lists: Name.1, Name.2, ..."""
    return [v for k, v in sorted(params.items()) if re.fullmatch(rf"{re.escape(name)}\.\d+", k)]


def _filters(params: dict[str, Any]) -> dict[str, list[str]]:
    """EC2 query filters: Filter.N.Name and Filter.N.Value.M."""
    found: dict[str, list[str]] = {}
    for key, name in params.items():
        match = re.fullmatch(r"Filter\.(\d+)\.Name", key)
        if match:
            found[name] = _listed(params, f"Filter.{match.group(1)}.Value")
    return found


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
