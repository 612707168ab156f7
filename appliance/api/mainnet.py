"""AO-Core (mainnet) routes for aoconnect and aos in their default mode (docs/mainnet.md).

The subset those clients use, on the same node core as the legacy routes: ``POST /push`` spawns
and ``POST /{p}~process@1.0/push`` messages through ``Node.ingest`` (ANS-104 bodies only; an
httpsig-signed request is 422, HyperBEAM's "send it as ANS-104"), ``compute/results=N`` and
``compute=N`` answer the stored signed Result of a slot or message, ``slot/current`` the latest
computed slot, ``as=execution/compute&K=V`` a dry-run, and ``/~meta@1.0/info/address`` the
node's address as text. Payments and other devices answer a JSON 404 naming why.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from appliance.ao import items
from appliance.api import cu_json, mainnet_paths
from appliance.api.mainnet_paths import Route
from appliance.errors import ApplianceError, BadRequest, ModuleError, NotFound, WrongEncoding

if TYPE_CHECKING:
    from appliance.api.http import Routes

log = logging.getLogger("appliance.http")
STATUS = 404
ADDRESS_PATH = "/~meta@1.0/info/address"
PATHS = ("/push", r"/{head:[^/]*~[^/]*}{tail:(/.*)?}", "/{process}/slot/{tail:.*}",
         "/{process}/compute{tail:.*}", "/{process}/now{tail:.*}")
GENESIS_WASM = "genesis-wasm@1.0"
PAYMENTS = ("payments are not used: this node is free to use (p4 and node-process ledgers are "
            "not served)")
OTHER = ("AO-Core route not served: this node serves the subset aos and aoconnect use "
         "(push, compute/results=N, slot/current, as=execution/compute; docs/mainnet.md); "
         "legacy MU/SU/CU routes are served too (docs/api.md)")
HTTPSIG = ("httpsig-signed requests are not taken here: send the message as an ANS-104 item "
           "(aoconnect request(): 'signing-format': 'ans104')")


def _httpsig(request: web.Request) -> bool:
    """Signed with RFC 9421 headers rather than carrying an ANS-104 body."""
    signed = "Signature" in request.headers or "Signature-Input" in request.headers
    return signed and request.content_type != "application/ans104"


class MainnetRoutes:
    """The AO-Core handlers, sharing the legacy routes' node, limits and result waiters."""

    def __init__(self, routes: Routes, address: str) -> None:
        self.r = routes
        self.node = routes.node
        self.address = address
        self._warned: set[str] = set()

    def _warn_once(self, request: web.Request, text: str) -> None:
        key = f"{request.method} {request.match_info.route.resource.canonical}" \
            if request.match_info.route.resource is not None else request.path
        if key not in self._warned:  # once per route: a mainnet client retries in loops
            self._warned.add(key)
            log.warning("mainnet (AO-Core) request %s %s refused: %s", request.method,
                        request.path, text)

    async def address_text(self, _request: web.Request) -> web.Response:
        """``GET /~meta@1.0/info/address``: the scheduler address aoconnect's spawn reads."""
        return web.Response(text=self.address)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Every AO-Core path: parse it, then answer the served operations."""
        route = mainnet_paths.parse(request.rel_url.raw_path)
        if route.operation in ("payments", "other"):
            text = PAYMENTS if route.operation == "payments" else OTHER
            self._warn_once(request, text)
            return web.json_response({"error": text}, status=STATUS)
        if _httpsig(request):
            self._warn_once(request, HTTPSIG)
            raise WrongEncoding(HTTPSIG)
        if route.operation == "push":
            if request.method != "POST":
                raise BadRequest("push takes POST with an ANS-104 item body")
            return await self._push(request, route)
        assert route.process is not None
        raw = await self.r._body(request)
        item = (await self.r._run(items.parse_verified, raw, self.node.settings.max_item_bytes)
                if raw else None)  # reads are verified but never stored
        if route.operation == "slot":
            return web.Response(text=str(await self._current(route.process)))
        if route.operation == "compute":
            return web.json_response(await self._compute(route.process, route.ref))
        return web.json_response(await self._dry_run(route, item))

    async def _push(self, request: web.Request, route: Route) -> web.Response:
        raw = await self.r._body(request)
        if not raw:
            raise BadRequest("the request body must be an ANS-104 data item")
        try:
            item = items.parse_unverified(raw, self.node.settings.max_item_bytes)
            kind = items.first_tag(item, "Type")
            if route.process is not None and item.target != route.process:
                raise BadRequest(f"the item's target ({item.target or 'none'}) is not the "
                                 f"process of the path ({route.process})")
            if route.process is None and kind != "Process":
                raise BadRequest("POST /push spawns: the item must have Type: Process "
                                 "(messages go to /{process}~process@1.0/push)")
            device = items.first_tag(item, "execution-device")
            if kind == "Process" and device not in (None, GENESIS_WASM):
                raise ModuleError(f"only {GENESIS_WASM} (legacy AO compute) processes run "
                                  f"here, not {device}")
            receipt = await self.r.admit(raw)
        except ApplianceError as exc:  # aoconnect never shows the body: say it in the log
            log.warning("mainnet (AO-Core) push %s refused: %s", request.path, exc)
            raise
        body: dict[str, Any] = {"id": receipt.id, "slot": receipt.slot,
                                "process": receipt.process_id or receipt.id}
        if receipt.warning is not None:
            body["warning"] = receipt.warning
        headers = {"id": receipt.id}
        if receipt.slot is not None:  # None when forwarded to the peer hosting the process
            headers["slot"] = str(receipt.slot)
        if kind == "Process":
            headers["process"] = receipt.id
        return web.json_response(body, headers=headers)

    async def _current(self, process: str) -> int:
        await self.r._run(self.node.process_info, process)  # NotFound for an unknown process
        rows = await self.r._run(lambda: self.node.results_page(
            process, after_slot=None, before_slot=None, descending=True, limit=1))
        return int(rows[0][0]) if rows else 0

    async def _message_at(self, process: str, slot: int) -> str:
        page, _ = await self.r._run(lambda: self.node.schedule_page(
            process, from_slot=slot, to_slot=slot, limit=1))
        for scheduled, message, _assignment in page:
            if scheduled.slot == slot:
                return str(message.id)
        raise NotFound(f"slot {slot} of {process} is not scheduled")

    async def _compute(self, process: str, ref: int | str | None) -> dict[str, Any]:
        if ref is None:
            ref = await self._current(process)
        message = ref if isinstance(ref, str) else await self._message_at(process, ref)
        value = cu_json.result_json(await self.r._await_result(process, message))
        row = await self.r._run(self.node.result_row, process, message)
        return {"raw": value, "results": {"raw": value}, "slot": row.slot, "process": process,
                "message": message, "result-id": row.result_id}

    async def _dry_run(self, route: Route, item: items.Item | None) -> dict[str, Any]:
        assert route.process is not None
        message: dict[str, Any] = {"Tags": [{"name": n, "value": v} for n, v in route.tags]}
        if item is not None:
            if item.target and item.target != route.process:
                raise BadRequest("the dry-run item's target is not the process of the path")
            try:
                message["Data"] = item.data.decode()
            except UnicodeDecodeError:
                raise BadRequest("dry-run data must be UTF-8") from None
            message["Owner"] = message["From"] = item.owner_address
        value = cu_json.result_json(await self.r._run(self.node.dry_run, route.process,
                                                      message))
        return {"raw": value, "results": {"raw": value}}


def add_routes(app: web.Application, routes: Routes, address: str) -> None:
    """Serve ``/~meta@1.0/info/address`` and every AO-Core path; call before the catch-all
    ``/{id}`` route."""
    handlers = MainnetRoutes(routes, address)
    app.router.add_get(ADDRESS_PATH, handlers.address_text)
    for path in PATHS:
        app.router.add_route("*", path, handlers.dispatch)
