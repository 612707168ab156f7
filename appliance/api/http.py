"""AO's HTTP API on one port: legacy MU, SU and CU routes, a gateway GraphQL subset, and ours.

Handlers run the node's blocking calls on worker threads (an item or a result read a shard
process answers is awaited on the loop instead); every error leaves as
``{"error": message}`` with the status chosen in :mod:`appliance.api.http_errors`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from appliance import __version__
from appliance.ao.encoding import b64url_decode
from appliance.api import cu_json, mainnet, su_json
from appliance.api.connections import ConnectionGuard, GuardedSite, HttpObserver
from appliance.api.graphql import GraphQLEndpoint
from appliance.api.http_errors import error_text, http_status, reason, retry_after
from appliance.api.http_runner import JsonErrorRunner
from appliance.api.waiters import ResultWaiters, await_result
from appliance.config import HttpLimits
from appliance.errors import ApplianceError, BadRequest, NotFound, NotHosted, RequestTimeout
from appliance.logfmt import fields
from appliance.network.forward import FORWARDED_HEADER, Forwarder
from appliance.network.peers import PeerDirectory
from appliance.network.trust import PeerTrust
from appliance.node.admission import TokenBucket
from appliance.node.node import Node
from appliance.node.shard import Receipt
from appliance.proof.export import proof_chunks

log = logging.getLogger("appliance.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Observe = Callable[[web.Request, int, str, float], None]
"""``observe(request, status, reason, seconds)``: called once per request as it completes."""
OBSERVE_KEY: web.AppKey[Observe] = web.AppKey("observe")
NODE_KEY: web.AppKey[Node] = web.AppKey("node", Node)
GUARD_KEY: web.AppKey[ConnectionGuard] = web.AppKey("connection_guard", ConnectionGuard)
MAX_PAGE = 1000
MAX_INT = 2**63 - 1
"""Slots, timestamps and cursors are SQLite integers: 0..2^63-1."""


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=lambda v: json.dumps(
        v, ensure_ascii=False, separators=(",", ":")))


def route_template(request: web.Request) -> str:
    """The matched route's template (``/result/{message}``), never the ids in the path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


def _completed(request: web.Request, status: int, why: str, started: float) -> None:
    """Count the request, and log it: a refusal or an error at INFO, an answer at DEBUG."""
    seconds = time.perf_counter() - started
    observe = request.app.get(OBSERVE_KEY)
    if observe:
        observe(request, status, why, seconds)
    level = logging.INFO if status >= 400 else logging.DEBUG
    if log.isEnabledFor(level):
        log.log(level, "%s", fields("request", method=request.method,
                                    route=route_template(request), status=status,
                                    ms=seconds * 1000))


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app.get(GUARD_KEY)
    if guard is not None:
        guard.request_started(request)
    try:
        return await _answer(request, handler)
    finally:
        if guard is not None:
            guard.request_finished(request)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _completed(request, exc.status, "http", started)
        if exc.status < 400:
            raise
        return _json({"error": exc.text or exc.reason}, exc.status)
    except (ApplianceError, HttpProcessingError, ConnectionResetError) as exc:
        _completed(request, http_status(exc), reason(exc), started)
        answer = _json({"error": error_text(exc)}, http_status(exc))
        wait = retry_after(exc)
        if wait is not None:
            answer.headers["Retry-After"] = wait
        if isinstance(exc, RequestTimeout):
            answer.force_close()
        return answer
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        _completed(request, 500, "internal", started)
        return _json({"error": "internal error"}, 500)
    _completed(request, response.status, "", started)
    return response


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _strict_loads(text: str) -> Any:
    """``json.loads`` without Python's NaN/Infinity extension (the guest's encoder refuses them)."""
    return json.loads(text, parse_constant=_refuse_constant)


class BadHttpFilter(logging.Filter):
    """For ``aiohttp.server``: bytes on the port that are not HTTP (scanners, TLS to a plain
    port) become one INFO line; their traceback is kept only at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a bad-request record; let everything else through."""
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else None
        record.msg, record.args = "%s", (fields(
            "bad http", peer=peer, error=f"{type(exc).__name__}: {exc.message}"[:200]),)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _int_param(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > 19 or not (value.isascii() and value.isdigit()) or int(value) > MAX_INT:
        raise BadRequest(f"query parameter {name} must be an integer from 0 to {MAX_INT}")
    return int(value)


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise BadRequest(f"query parameter {name} is required")
    return value


def _limit(request: web.Request, default: int) -> int:
    limit = _int_param(request, "limit")
    if limit is None:
        return default
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
    return limit


def _cursor(slot: int) -> str:
    return base64.urlsafe_b64encode(str(slot).encode()).decode().rstrip("=")


def _uncursor(value: str | None) -> int | None:
    if not value:
        return None
    try:
        text = base64.urlsafe_b64decode(value[:64] + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error):
        text = b""
    if len(value) > 64 or not text.isdigit() or int(text) > MAX_INT:
        raise BadRequest(f"not a results cursor: {value[:64]!r}")
    return int(text)


CRON_PAGE = 500


def _cron_cursor(key: dict[str, Any]) -> str:
    """The CU's cursor: standard base64 of ``{timestamp, ordinate, cron, sort}`` JSON."""
    body = json.dumps({**key, "sort": "ASC"}, separators=(",", ":"))
    return base64.b64encode(body.encode()).decode()


def _cron_key(value: str) -> dict[str, Any] | None:
    try:
        key = json.loads(base64.b64decode(value, validate=True))
    except (ValueError, binascii.Error):
        return None
    return key if isinstance(key, dict) and "timestamp" in key else None


def _cron_timestamp(value: Any, name: str) -> int:
    try:
        timestamp = int(value)
    except (TypeError, ValueError, OverflowError):
        timestamp = -1
    if not 0 <= timestamp <= MAX_INT:
        raise BadRequest(f"{name} must be a cron cursor or a timestamp from 0 to {MAX_INT}")
    return timestamp


def _cron_from(value: str | None) -> tuple[tuple[int, str, str] | None, int | None]:
    """``from``: a cursor (exclusive) or a bare timestamp (inclusive of that millisecond)."""
    if not value:
        return None, None
    key = _cron_key(value)
    if key is None:
        return None, _cron_timestamp(value, "from")
    ts = _cron_timestamp(key["timestamp"], "from")
    if key.get("ordinate") is None:
        return None, ts
    return (ts, str(key["ordinate"]), str(key.get("cron") or "")), None


def _cron_to(value: str | None) -> tuple[int, str | None, str | None] | None:
    if not value:
        return None
    key = _cron_key(value)
    if key is None:
        return _cron_timestamp(value, "to"), None, None
    ordinate = key.get("ordinate")
    return (_cron_timestamp(key["timestamp"], "to"), None if ordinate is None else str(ordinate),
            None if key.get("cron") is None else str(key["cron"]))


def _cron_node(value: dict[str, Any]) -> dict[str, Any]:
    """A cron result as the CU lists it: Output and Error only when present."""
    node = {"Messages": value.get("Messages") or [], "Assignments": value.get("Assignments") or [],
            "Spawns": value.get("Spawns") or []}
    for key in ("Output", "Error"):
        if value.get(key) is not None:
            node[key] = value[key]
    return node


class Routes:
    """Route handlers bound to one node."""

    def __init__(self, node: Node, limits: HttpLimits, observer: HttpObserver | None,
                 peers: PeerDirectory | None = None, forwarder: Forwarder | None = None,
                 trust: PeerTrust | None = None) -> None:
        self.node = node
        self.limits = limits
        self.peers = peers
        self.forwarder = forwarder
        self.trust = trust
        self.graphql = GraphQLEndpoint(node)
        self.waiters = ResultWaiters(limits.max_result_waiters, observer)
        self.attestations = TokenBucket(limits.attestation_rate, limits.attestation_burst)

    async def _body(self, request: web.Request) -> bytes:
        """The request body, read within ``body_timeout_seconds`` (RequestTimeout after)."""
        try:
            async with asyncio.timeout(self.limits.body_timeout_seconds):
                return await request.read()
        except TimeoutError:
            guard = request.app.get(GUARD_KEY)
            if guard is not None:
                guard.closing(request, "body_timeout")
            raise RequestTimeout(f"the request body did not arrive within "
                                 f"{self.limits.body_timeout_seconds:g} s") from None

    async def _json_body(self, request: web.Request, refusal: str,
                         body: bytes | None = None) -> Any:
        body = await self._body(request) if body is None else body
        try:
            return _strict_loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(refusal) from None
        except RecursionError:  # nesting deeper than the interpreter's stack: [[[[...
            raise BadRequest(f"{refusal} (nested too deeply)") from None

    async def _relayed(self, request: web.Request, process_id: str,
                       body: bytes | None = None) -> web.Response | None:
        """The answer of the peer hosting ``process_id`` to this same request, when this node
        does not host it and a peer does (None: answer here)."""
        forwarder = self.forwarder
        if forwarder is None or FORWARDED_HEADER in request.headers or \
                await self._run(self.node.hosts, process_id):
            return None
        peer = await self._run(forwarder.host_of, process_id)
        if peer is None or peer.location is None:
            return None
        answer = await self._run(forwarder.relay, peer, request.method, request.path_qs, body)
        return web.Response(status=answer.status, body=answer.body, headers={
            "Content-Type": answer.content_type, "AO-Answered-By": peer.location.url})

    async def _await_result(self, process_id: str, message_id: str) -> dict[str, Any]:
        return await await_result(self.node, self.waiters, process_id, message_id)

    @staticmethod
    async def _run(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def health(self, _request: web.Request) -> web.Response:
        status = await self._run(self.node.status)
        body = {"Unit": "ao-appliance", "version": __version__,
                "timestamp": time.time_ns() // 1_000_000,
                "height": self.node.settings.block_height, **status,
                "outbox": {"by_status": await self._run(self.node.outbox_by_status),
                           "undelivered": await self._run(self.node.outbox_failures)}}
        if self.peers is not None:
            verdicts = self.trust.describe() if self.trust is not None else {}
            body["peers"] = [{**p, "trust": verdicts.get(str(p["address"]))}
                             for p in self.peers.describe()]
        if self.forwarder is not None:
            body["forwards"] = await self._run(self.forwarder.forwards_by_status)
        return _json(body)

    async def admit(self, raw: bytes, *, forward: bool = True) -> Receipt:
        """``Node.ingest`` of a client item (``forward``: a peer's process may be forwarded to
        it); a refusal for another node's process names it."""
        try:
            return await self._ingest(raw, forward)
        except (NotHosted, NotFound) as exc:
            if self.peers is None:
                raise
            raise await self._run(self.peers.explain, raw, exc) from None

    async def _ingest(self, raw: bytes, forward: bool) -> Receipt:
        """``Node.ingest``: awaited on the loop when a shard process takes the item (no thread
        waits on its answer), else on a thread."""
        node = self.node
        try:
            future = node.submit_ingest(raw)
            if future is not None:
                return await asyncio.wrap_future(future)
        except (NotHosted, NotFound) as exc:
            return await asyncio.to_thread(node.ingest_refused, raw, exc, forward=forward)
        return await asyncio.to_thread(node.ingest, raw, forward=forward)

    async def post_item(self, request: web.Request) -> web.Response:
        raw = await self._body(request)
        if not raw:
            raise BadRequest("the request body must be an ANS-104 data item")
        if "assign" in request.query:
            return await self._assign(request, raw)
        forward = FORWARDED_HEADER not in request.headers  # a peer's forward: never pass it on
        receipt = await self.admit(raw, forward=forward)
        body: dict[str, Any] = {"id": receipt.id, "message": "Processing DataItem",
                                "timestamp": receipt.timestamp_ms or time.time_ns() // 1_000_000}
        if receipt.type == "Process":
            body["processId"] = receipt.id
        if receipt.slot is not None:
            body["slot"] = receipt.slot
        if receipt.warning is not None:
            body["warning"] = receipt.warning
        if receipt.forwarded_to is not None:
            body["forwardedTo"] = receipt.forwarded_to
        return _json(body, 202 if receipt.type != "Module" else 200)

    async def _assign(self, request: web.Request, raw: bytes) -> web.Response:
        """``POST /?process-id=P&assign=M`` (AO's SU assign call) with message M as the body."""
        process_id, message_id = request.query.get("process-id"), request.query.get("assign")
        if not process_id or not message_id:
            raise BadRequest("an assign call needs both process-id and assign in the query")
        receipt = await self._run(self.node.assign, process_id, message_id, raw)
        body: dict[str, Any] = {"id": receipt.id, "message": "Assigned",
                                "process": process_id,
                                "timestamp": time.time_ns() // 1_000_000}
        if receipt.slot is not None:
            body["slot"] = receipt.slot
        return _json(body, 202)

    async def timestamp(self, _request: web.Request) -> web.Response:
        return _json({"timestamp": time.time_ns() // 1_000_000,
                      "block_height": self.node.settings.block_height})

    async def process(self, request: web.Request) -> web.Response:
        process, slot, assignment = await self._run(self.node.process_info,
                                                    request.match_info["id"])
        return _json(su_json.process_json(process, assignment, slot.timestamp_ms,
                                          slot.block_height))

    async def item_or_schedule(self, request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        process_id = request.query.get("process-id")
        if process_id and process_id != ident:
            message, assignment = await self._run(self.node.scheduled, process_id, ident)
            return _json({"message": su_json.message_json(message),
                          "assignment": su_json.assignment_json(assignment)})
        page, more = await self._run(lambda: self.node.schedule_page(
            ident, from_ms=_int_param(request, "from"), to_ms=_int_param(request, "to"),
            from_slot=_int_param(request, "from-nonce"), to_slot=_int_param(request, "to-nonce"),
            limit=_limit(request, 100)))
        edges = [{"cursor": str(slot.timestamp_ms),
                  "node": {"message": su_json.message_json(message),
                           "assignment": su_json.assignment_json(assignment)}}
                 for slot, message, assignment in page]
        return _json({"page_info": {"has_next_page": more}, "edges": edges})

    async def result(self, request: web.Request) -> web.Response:
        relayed = await self._relayed(request, _required(request, "process-id"))
        if relayed is not None:
            return relayed
        return _json(cu_json.result_json(await self._await_result(
            _required(request, "process-id"), request.match_info["message"])))

    async def results(self, request: web.Request) -> web.Response:
        sort = request.query.get("sort", "ASC").upper()
        if sort not in ("ASC", "DESC"):
            raise BadRequest("sort must be ASC or DESC")
        after, before = _uncursor(request.query.get("from")), _uncursor(request.query.get("to"))
        relayed = await self._relayed(request, request.match_info["process"])
        if relayed is not None:
            return relayed
        if sort == "DESC":
            after, before = before, after
        rows = await self._run(lambda: self.node.results_page(
            request.match_info["process"], after_slot=after, before_slot=before,
            descending=sort == "DESC", limit=_limit(request, 25)))
        return _json({"edges": [{"cursor": _cursor(slot), "node": cu_json.result_json(value)}
                                for slot, value in rows]})

    async def dry_run(self, request: web.Request) -> web.Response:
        process_id = _required(request, "process-id")
        raw = await self._body(request)
        relayed = await self._relayed(request, process_id, raw)
        if relayed is not None:
            return relayed
        message = await self._json_body(request, "dry-run body must be a JSON message", raw)
        if not isinstance(message, dict):
            raise BadRequest("dry-run body must be a JSON object")
        return _json(cu_json.result_json(await self._run(self.node.dry_run, process_id,
                                                         message)))

    async def state(self, request: web.Request) -> web.Response:
        slot, memory = await self._run(self.node.state, request.match_info["process"])
        return web.Response(body=memory, content_type="application/octet-stream",
                            headers={"AO-Slot": str(slot)})

    async def cron(self, request: web.Request) -> web.Response:
        """The CU's ``GET /cron/:processId``: evaluate crons up to ``to`` (or now), then page."""
        process_id = request.match_info["process"]
        after, since = _cron_from(request.query.get("from"))
        upto = _cron_to(request.query.get("to"))
        limit = max(0, min(_int_param(request, "limit") or CRON_PAGE, MAX_PAGE))
        await self._run(self.node.tick_crons, process_id)
        rows, more = await self._run(lambda: self.node.cron_page(
            process_id, after=after, since_ms=since, upto=upto, limit=limit))
        edges = [{"node": _cron_node(value), "cursor": _cron_cursor(key)} for key, value in rows]
        return _json({"pageInfo": {"hasNextPage": more}, "edges": edges})

    async def monitor(self, request: web.Request) -> web.Response:
        """AO's MU ``POST /monitor/:processId``: this node ticks every cron process anyway."""
        await self._run(self.node.process_info, request.match_info["process"])
        return web.Response(text="Monitoring process")

    async def attestation(self, request: web.Request) -> web.Response:
        nonce_text = request.query.get("nonce")
        if nonce_text is None:
            raw = await self._run(self.node.item_raw, self.node.attestation_id)
        else:
            try:
                nonce = b64url_decode(nonce_text)
            except (ValueError, binascii.Error):
                raise BadRequest("nonce must be base64url") from None
            if not 1 <= len(nonce) <= 64:
                raise BadRequest("nonce must be 1 to 64 bytes")
            self.attestations.take("fresh attestations")
            raw = (await asyncio.to_thread(self.node.attest, nonce, keep=False)).raw
        return web.Response(body=raw, content_type="application/octet-stream")

    async def raw(self, request: web.Request) -> web.Response:
        data, content_type = await self._run(self.node.item_data, request.match_info["id"])
        return web.Response(body=data, headers={"Content-Type": content_type})

    async def result_item(self, request: web.Request) -> web.Response:
        process_id, message_id = _required(request, "process-id"), request.match_info["message"]
        await self._await_result(process_id, message_id)
        raw = await self._run(self.node.result_item, process_id, message_id)
        return web.Response(body=raw, content_type="application/octet-stream")

    async def proof(self, request: web.Request) -> web.StreamResponse:
        """Streamed (chunked) a page of slots at a time: memory stays bounded by a page
        whatever the history's length. An error after the first piece aborts the stream."""
        replay = request.query.get("replay", "") in ("1", "true")
        process_id, message_id = _required(request, "process-id"), request.match_info["message"]
        await self._await_result(process_id, message_id)
        pieces = proof_chunks(self.node, process_id, message_id, replay=replay)
        done = object()
        piece = await self._run(next, pieces, done)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        while piece is not done:
            await response.write(piece)
            piece = await self._run(next, pieces, done)
        await response.write_eof()
        return response

    async def graphql_query(self, request: web.Request) -> web.Response:
        body = await self._json_body(request, "GraphQL body must be JSON")
        return _json(await self._run(self.graphql.execute, body))


def make_app(node: Node, observe: Observe | None = None, limits: HttpLimits | None = None,
             observer: HttpObserver | None = None,
             peers: PeerDirectory | None = None,
             forwarder: Forwarder | None = None,
             trust: PeerTrust | None = None) -> web.Application:
    """The aiohttp application serving ``node``; serve it through :func:`start_site` for the
    connection cap and head timeout of ``limits``. With ``peers``, ``GET /`` lists them and a
    refusal for an item another node schedules names that node (and its URL when known); with
    ``forwarder`` too, reads about a process a peer hosts are answered by that peer."""
    limits = limits or HttpLimits()
    app = web.Application(middlewares=[_errors],
                          client_max_size=node.settings.max_item_bytes + 64 * 1024)
    app[NODE_KEY] = node
    app[GUARD_KEY] = ConnectionGuard(limits.max_connections, limits.header_timeout_seconds,
                                     observer)
    if observe is not None:
        app[OBSERVE_KEY] = observe
    r = Routes(node, limits, observer, peers, forwarder, trust)

    async def listen(_app: web.Application) -> None:
        r.waiters.bind(asyncio.get_running_loop())
        node.add_progress_listener(r.waiters.progress)

    async def unlisten(_app: web.Application) -> None:
        node.remove_progress_listener(r.waiters.progress)

    app.on_startup.append(listen)
    app.on_cleanup.append(unlisten)
    app.router.add_get("/", r.health)
    app.router.add_post("/", r.post_item)
    app.router.add_get("/timestamp", r.timestamp)
    app.router.add_get("/processes/{id}", r.process)
    app.router.add_get("/result/{message}", r.result)
    app.router.add_get("/results/{process}", r.results)
    app.router.add_post("/dry-run", r.dry_run)
    app.router.add_get("/state/{process}", r.state)
    app.router.add_get("/cron/{process}", r.cron)
    app.router.add_post("/monitor/{process}", r.monitor)
    app.router.add_get("/attestation", r.attestation)
    app.router.add_get("/result-item/{message}", r.result_item)
    app.router.add_get("/raw/{id}", r.raw)
    app.router.add_get("/proof/{message}", r.proof)
    app.router.add_post("/graphql", r.graphql_query)
    mainnet.add_routes(app, r, node.identity.address)
    app.router.add_get("/{id}", r.item_or_schedule)
    return app


async def start_site(app: web.Application, sock: socket.socket,
                     limits: HttpLimits | None = None) -> web.AppRunner:
    """Serve ``app`` on the listening ``sock`` (read ``runner.addresses`` for where) through its
    connection guard, with idle keep-alive connections closed after ``idle_timeout_seconds``."""
    limits = limits or HttpLimits()
    runner = JsonErrorRunner(app, access_log=None, keepalive_timeout=limits.idle_timeout_seconds)
    await runner.setup()
    await GuardedSite(runner, app[GUARD_KEY], sock).start()
    return runner
