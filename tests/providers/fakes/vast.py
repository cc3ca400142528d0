"""A fake of the Vast.ai REST API on a local FakeHTTPServer (does I/O on 127.0.0.1 only).

Paths, bodies and field names follow docs.vast.ai (API reference, OpenAPI pages) and vast-cli's
``vastai/api``: ``POST /api/v0/bundles/`` (search: ``{field: {op: value}}`` plus ``type``,
``order``, ``limit``, ``allocated_storage``), ``PUT /api/v0/asks/{id}/`` (rent, answers
``{"success": true, "new_contract": id}``), ``GET /api/v1/instances/`` (pages of at most 25 with
``next_token``/``after_token``; the v0 list answers 410 for accounts made after 2026-06-02, as
this one is), ``DELETE /api/v0/instances/{id}/`` (404 ``no_such_instance`` when gone) and ``GET
/api/v0/users/current/``. Errors are ``{"success": false, "error": code, "msg": text}``; a 429 is
plain text "API requests too frequent..." without Retry-After (rate-limits-and-errors.mdx).

Chosen here, not documented: the 401 body, the HTTP status of ``insufficient_credit`` (400), and
``status_msg`` after an outbid (the state fields follow the docs: the contract stops, the user's
intended status stays ``running``).
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from decimal import Decimal
from typing import Any

from tests.providers.fakes.http import FakeHTTPServer, FakeRequest, FakeResponse

API_KEY = "3f9c0e7a1b2d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6"  # 64 hex, like Vast's
ASK = r"/api/v0/asks/(?P<ask>\d+)/"
BUNDLES = "/api/v0/bundles/"
INSTANCES_V1 = "/api/v1/instances/"
INSTANCE = r"/api/v0/instances/(?P<id>\d+)/"
HOURS_PER_MONTH = 30 * 24  # storage_cost is $/GB/month; dph_total adds it per hour


def ask(
    ask_id: int,
    gpu_name: str,
    num_gpus: int,
    dph_base: str,
    min_bid: str | None,
    geolocation: str,
    gpu_ram_mb: int = 81559,
    cpu_cores_effective: float = 96.0,
    cpu_ram_mb: int = 1031916,
) -> dict[str, Any]:
    """One offer ("ask") as the search returns it (a subset of its ~70 fields, same names)."""
    return {
        "id": ask_id,
        "ask_contract_id": ask_id,
        "machine_id": ask_id // 1000,
        "host_id": 91000 + ask_id % 97,
        "gpu_name": gpu_name,
        "num_gpus": num_gpus,
        "gpu_ram": gpu_ram_mb,
        "gpu_total_ram": gpu_ram_mb * num_gpus,
        "cpu_name": "AMD EPYC 9654 96-Core Processor",
        "cpu_cores": 192,
        "cpu_cores_effective": cpu_cores_effective,
        "cpu_ram": cpu_ram_mb,
        "disk_space": 2840.5,
        "dph_base": float(dph_base),
        "storage_cost": 0.144,
        "min_bid": None if min_bid is None else float(min_bid),
        "inet_up": 4235.1,
        "inet_down": 7014.3,
        "reliability2": 0.9981,
        "reliability": 0.9981,
        "dlperf": 402.3,
        "geolocation": geolocation,
        "public_ipaddr": f"104.{ask_id % 250}.17.{num_gpus}",
        "verification": "verified",
        "verified": True,
        "rentable": True,
        "rented": False,
        "external": False,
        "is_bid": False,
        "duration": 2592000.0,
        "compute_cap": 900,
        "cuda_max_good": 12.8,
    }


ASKS = [
    ask(21474836, "H100 SXM", 8, "17.60", "11.20", "Texas, US"),
    ask(21474901, "H100 SXM", 8, "18.40", "12.00", "Quebec, CA"),
    ask(21475002, "H100 PCIE", 1, "1.85", "1.10", "Oslo, NO", cpu_cores_effective=24.0, cpu_ram_mb=257979),
    ask(21475117, "H100 NVL", 2, "4.20", None, "Sweden, SE", gpu_ram_mb=95830),
    ask(21475230, "H200", 8, "24.00", "16.00", "Utah, US", gpu_ram_mb=143771),
    ask(21475341, "RTX 4090", 1, "0.35", "0.18", "Ontario, CA", gpu_ram_mb=24564, cpu_cores_effective=16.0),
]
_OPS = {
    "eq": lambda v, x: v == x,
    "neq": lambda v, x: v != x,
    "gt": lambda v, x: v is not None and v > x,
    "gte": lambda v, x: v is not None and v >= x,
    "lt": lambda v, x: v is not None and v < x,
    "lte": lambda v, x: v is not None and v <= x,
    "in": lambda v, x: v in x,
    "notin": lambda v, x: v not in x,
}
_SEARCH_KEYS = {"type", "order", "limit", "allocated_storage", "disable_bundling"}
RUNTYPES = {"ssh", "ssh_direct", "ssh_proxy", "jupyter", "jupyter_direct", "jupyter_proxy", "args"}


def refusal(error: str, msg: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"success": False, "error": error} | ({"msg": msg} if msg else {}) | extra


def scripted(kind: str, ask_id: int = ASKS[0]["id"]) -> FakeResponse:
    """Vast's answer for one of the contract's error kinds."""
    return {
        "capacity": FakeResponse(410, refusal("no_such_ask", ask_id=ask_id)),
        "quota": FakeResponse(
            400, refusal("insufficient_credit", "Your account lacks credit to rent this machine.")
        ),
        "auth": FakeResponse(401, refusal("unauthorized", "Invalid or missing API key")),
        "invalid": FakeResponse(400, refusal("invalid_args", "invalid disk size")),
        "throttle": FakeResponse(
            429, b"API requests too frequent: endpoint threshold=2.5", {"Content-Type": "text/plain"}
        ),
        "server": FakeResponse(
            502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", {"Content-Type": "text/html"}
        ),
    }[kind]


class FakeVast(FakeHTTPServer):
    """Vast.ai's REST API with an in-memory marketplace (asks) and account (instances)."""

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.asks = {a["id"]: a for a in copy.deepcopy(ASKS)}
        self.instances: dict[int, dict[str, Any]] = {}
        self._contracts = itertools.count(28817350)
        self._register()

    # --- scripting -------------------------------------------------------------------------
    def fail_next(self, method: str, path: str, kind: str) -> None:
        self.inject(method, path, scripted(kind))

    def row(self, label: str) -> dict[str, Any]:
        return next(r for r in self.instances.values() if r["label"] == label)

    def boot(self, label: str) -> None:
        self.row(label).update(actual_status="running", status_msg="success, running vastai/base-image")

    def preempt(self, label: str) -> None:
        """Someone outbids interruptible instance ``label``: its contract stops, the user still wants it."""
        row = self.row(label)
        assert row["is_bid"], "only interruptible (bid) instances are outbid"
        row.update(actual_status="stopped", cur_state="stopped", status_msg="Instance stopped: outbid")

    def add_foreign(self, count: int) -> None:
        """Instances the account runs outside gpubroker (labels not ours)."""
        for n in range(count):
            contract = next(self._contracts)
            self.instances[contract] = self._new_row(
                contract, ASKS[-1], f"notebook-{n}", None, 16, "pytorch/pytorch"
            )

    def live_count(self) -> int:
        return len(self.instances)

    # --- serving ---------------------------------------------------------------------------
    def _register(self) -> None:
        routes = [
            ("POST", BUNDLES, self._search),
            ("PUT", ASK, self._rent),
            ("GET", INSTANCES_V1, self._list),
            ("GET", "/api/v0/instances/", self._list_v0),
            ("DELETE", INSTANCE, self._destroy),
            ("GET", "/api/v0/users/current/", self._user),
        ]
        for method, path, handler in routes:
            self.route(method, path)(self._guarded(handler))

    def _guarded(self, handler: Any) -> Any:
        def wrapped(request: FakeRequest) -> FakeResponse:
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return scripted("auth")
            return handler(request)

        return wrapped

    def _search(self, request: FakeRequest) -> FakeResponse:
        query = request.json()
        if not isinstance(query, dict):
            return FakeResponse(400, refusal("invalid_args", "Invalid query: must be dict of conditions"))
        storage = Decimal(str(query.get("allocated_storage", 5.0)))
        offers = []
        for offer in self.asks.values():
            priced = dict(offer)
            priced["dph_total"] = float(
                Decimal(str(offer["dph_base"]))
                + storage * Decimal(str(offer["storage_cost"])) / HOURS_PER_MONTH
            )
            if query.get("type") == "bid":
                if offer["min_bid"] is None:
                    continue
                priced["is_bid"] = True
            matched = True
            for key, condition in query.items():
                if key in _SEARCH_KEYS:
                    continue
                if key not in offer or not isinstance(condition, dict):
                    return FakeResponse(400, refusal("invalid_args", f"Unknown or malformed filter: {key}"))
                value = offer[key].rsplit(",", 1)[-1].strip() if key == "geolocation" else offer[key]
                matched = matched and all(_OPS[op](value, arg) for op, arg in condition.items())
            if matched and not offer["rented"]:
                offers.append(priced)
        for column, direction in reversed(query.get("order") or []):
            offers.sort(key=lambda o: (o.get(column) is None, o.get(column)), reverse=direction == "desc")
        return FakeResponse(200, {"offers": offers[: int(query.get("limit") or 64)]})

    def _rent(self, request: FakeRequest) -> FakeResponse:
        body, ask_id = request.json(), int(request.params["ask"])
        offer = self.asks.get(ask_id)
        if offer is None or offer["rented"]:
            return FakeResponse(410, refusal("no_such_ask", ask_id=ask_id))
        if not body.get("image") and not body.get("template_hash_id"):
            return FakeResponse(400, refusal("invalid_args", "image or template_hash_id is required"))
        if not isinstance(body.get("env", {}), dict):
            return FakeResponse(400, refusal("invalid_args", "env must be a JSON object"))
        if body.get("runtype") not in RUNTYPES | {None}:
            return FakeResponse(400, refusal("invalid_args", f"invalid runtype {body.get('runtype')}"))
        price = body.get("price")
        if price is not None and offer["min_bid"] is None:
            return FakeResponse(400, refusal("invalid_args", "this machine takes no interruptible bids"))
        offer["rented"] = True
        contract = next(self._contracts)
        self.instances[contract] = self._new_row(
            contract,
            offer,
            body.get("label"),
            price,
            body.get("disk", 8),
            body["image"],
            body.get("env") or {},
        )
        return FakeResponse(200, {"success": True, "new_contract": contract})

    def _new_row(
        self,
        contract: int,
        offer: dict[str, Any],
        label: str | None,
        price: float | None,
        disk: float,
        image: str,
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        return {
            "id": contract,
            "label": label,
            "machine_id": offer["machine_id"],
            "host_id": offer["host_id"],
            "actual_status": None,
            "intended_status": "running",
            "cur_state": "running",
            "status_msg": None,
            "is_bid": price is not None,
            "gpu_name": offer["gpu_name"],
            "num_gpus": offer["num_gpus"],
            "dph_total": price
            if price is not None
            else offer["dph_base"] + disk * offer["storage_cost"] / 720,
            "min_bid": offer["min_bid"],
            "geolocation": offer["geolocation"],
            "start_date": time.time(),
            "public_ipaddr": offer["public_ipaddr"],
            "ssh_host": "ssh5.vast.ai",
            "ssh_port": 10000 + contract % 5000,
            "image_uuid": image,
            "disk_space": disk,
            "cpu_cores_effective": offer["cpu_cores_effective"],
            "cpu_ram": offer["cpu_ram"],
            "extra_env": [[k, v] for k, v in (env or {}).items()],
        }

    def _list(self, request: FakeRequest) -> FakeResponse:
        def arg(name: str, default: Any) -> Any:
            raw = request.query.get(name)
            return default if raw is None else json.loads(raw[0]) if name != "after_token" else raw[0]

        filters, limit, after = (
            arg("select_filters", {}),
            min(int(arg("limit", 25)), 25),
            arg("after_token", None),
        )
        rows = sorted(self.instances.values(), key=lambda r: r["id"])
        rows = [
            r for r in rows if all(_OPS[op](r.get(k), v) for k, c in filters.items() for op, v in c.items())
        ]
        if after is not None:
            rows = [r for r in rows if r["id"] > int(after.removeprefix("tok-"))]
        page = rows[:limit]
        token = f"tok-{page[-1]['id']}" if len(rows) > limit else None
        body = {"instances": page, "next_token": token, "total_instances": len(self.instances)}
        return FakeResponse(200, body)

    def _list_v0(self, request: FakeRequest) -> FakeResponse:
        message = "Endpoint deprecated: /api/v0/instances/ is deprecated. Use /api/v1/instances/ instead."
        return FakeResponse(410, refusal("deprecated", message))

    def _destroy(self, request: FakeRequest) -> FakeResponse:
        contract = int(request.params["id"])
        row = self.instances.pop(contract, None)
        if row is None:
            return FakeResponse(404, refusal("no_such_instance", f"Instance {contract} not found."))
        offer = next((a for a in self.asks.values() if a["machine_id"] == row["machine_id"]), None)
        if offer is not None:
            offer["rented"] = False
        return FakeResponse(200, {"success": True})

    def _user(self, request: FakeRequest) -> FakeResponse:
        return FakeResponse(200, {"id": 481516, "email": "ops@example.com", "credit": 250.0, "ssh_key": None})


__all__ = ["API_KEY", "ASK", "ASKS", "BUNDLES", "INSTANCE", "INSTANCES_V1", "FakeVast", "refusal", "scripted"]
