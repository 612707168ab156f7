"""Prometheus metrics of one node, on a registry of their own, served on a separate listener.

:class:`NodeMetrics` is the node's :class:`~appliance.node.observer.NodeObserver` and the HTTP
API's ``observe`` hook. Queue depths, broken processes and the attestation age are read at
scrape time. Labels carry kinds, outcomes, reasons and route templates only, never ids.
docs/operator-guide.md ("Metrics and alerting") lists every metric.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from appliance import __version__
from appliance.api.connections import HttpObserver
from appliance.api.http_errors import reason
from appliance.errors import ShardUnavailable
from appliance.network.trust import REFUSALS as PEER_REFUSALS
from appliance.node.node import Node
from appliance.node.observer import NodeObserver

log = logging.getLogger("appliance.metrics")
PREFIX = "ao_appliance_"
EVALUATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                      0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0)
CHECKPOINT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
OUTCOMES = ("ok", "error", "out_of_gas", "wall_clock", "out_of_memory", "response_too_large",
            "trap", "invalid_response", "outbox_limited")
_ENGINE_ERRORS = (
    ("compute limit exceeded", "out_of_gas"),
    ("Error: out of gas!", "out_of_gas"),
    ("wall-clock limit exceeded", "wall_clock"),
    ("memory limit exceeded", "out_of_memory"),
    ("outbox limit exceeded", "outbox_limited"),
    ("response exceeds the limit", "response_too_large"),
    ("wasm trap:", "trap"),
    ("wasm execution failed", "trap"),
    ("native code called abort()", "trap"),
    ("Assertion failed:", "trap"),
    ("guest memory access out of bounds", "trap"),
    ("unterminated string", "trap"),
    ("module returned a response that is not JSON", "invalid_response"),
    ("module response lacks the {ok, response} envelope", "invalid_response"),
    ("module response is not an object", "invalid_response"),
)


def outcome(result: Mapping[str, Any]) -> str:
    """The evaluation outcome of one result object (one of :data:`OUTCOMES`).

    ``ok`` when its ``Error`` is empty; the engine's own failure texts (limits, traps, a broken
    response) map to their outcome; any other ``Error`` is the process's own, ``error``.
    """
    error = result.get("Error")
    if not error:
        return "ok"
    if isinstance(error, str):
        for prefix, name in _ENGINE_ERRORS:
            if error.startswith(prefix):
                return name
    return "error"


def route_template(request: web.Request) -> str:
    """The matched route's template (``/result/{message}``), never the raw path."""
    resource = request.match_info.route.resource
    return UNMATCHED_ROUTE if resource is None else resource.canonical


def http_method(request: web.Request) -> str:
    """The request method, or ``other`` for a method outside the standard set."""
    return request.method if request.method in HTTP_METHODS else "other"


def build_labels() -> dict[str, str]:
    """The ``ao_appliance_build_info`` labels: node, Python and wasmtime versions."""
    return {"version": __version__, "python": platform.python_version(),
            "wasmtime": dist_version("wasmtime")}


class _NodeState:
    """Scrape-time gauges read from the node and the metrics' own clocks."""

    def __init__(self, metrics: NodeMetrics, node: Node) -> None:
        self._metrics = metrics
        self._node = node

    def collect(self) -> Iterable[Metric]:
        """Queue depths from the store, broken processes, and the attestation age; what the
        node cannot read now (its store, a shard that is restarting) is left out of this
        scrape and logged."""
        try:
            gauges = list(self._node_gauges())
        except (sqlite3.Error, ShardUnavailable) as exc:
            log.warning("metrics: cannot read the node's state: %s", exc)
        else:
            yield from gauges
        age = self._metrics.attestation_age()
        if age is not None:
            yield GaugeMetricFamily(
                PREFIX + "attestation_age_seconds",
                "Seconds since the last attestation the node made successfully.", value=age)

    def _node_gauges(self) -> Iterable[Metric]:
        status = self._node.status()
        yield GaugeMetricFamily(PREFIX + "processes", "Processes hosted by this node.",
                                value=status["processes"])
        yield GaugeMetricFamily(
            PREFIX + "schedule_backlog",
            "Scheduled messages not yet evaluated, over all processes.",
            value=status["schedule_backlog"])
        yield GaugeMetricFamily(
            PREFIX + "outbox_pending",
            "Outgoing messages waiting for delivery to another node.",
            value=status["outbox_pending"])
        items = GaugeMetricFamily(
            PREFIX + "outbox_items",
            "Outbox items by status: scheduled (here), forwarding (to another shard), pending "
            "(to push to a peer), delivered (a peer acknowledged), failed (a peer refused), "
            "pending-remote (no node hosts the target), dropped-depth.", labels=["status"])
        for name, count in sorted(self._node.outbox_by_status().items()):
            items.add_metric([name], count)
        yield items
        yield GaugeMetricFamily(
            PREFIX + "processes_broken",
            "Processes that stopped evaluating since the node started (see the log).",
            value=self._node.broken_count())
        forwards = GaugeMetricFamily(
            PREFIX + "forwards", "Client items forwarded to the peer hosting their process, "
            "by status (pending: queued, being retried).", labels=["status"])
        peers = self._node.peers
        counts = peers.forwards_by_status() if peers is not None else {}
        for state in ("pending", "delivered", "failed"):
            forwards.add_metric([state], counts.get(state, 0))
        yield forwards
        yield from _memory_gauges(self._node)
        yield from _standing_gauges(self._node)


def _memory_gauges(node: Node) -> Iterable[Metric]:
    """Resident and evicted process instances, their bytes, and the budget."""
    tally, budget = node.memory()
    for name, text, value in (
            ("memory_budget_bytes", "RAM resident instances may hold before idle ones are "
             "evicted (node.memory_budget_bytes).", budget),
            ("processes_resident", "Processes with an instance resident in an evaluation "
             "worker.", tally.resident),
            ("processes_resident_bytes", "RAM the resident process instances hold (memory plus "
             "rollback base), as last reported by their workers.", tally.resident_bytes),
            ("processes_evicted", "Processes evicted to their checkpoint and not reopened "
             "since.", tally.evicted),
            ("processes_evicted_bytes", "RAM the evicted processes held when they were "
             "evicted.", tally.evicted_bytes),
            ("dry_run_resident_bytes", "RAM the resident dry-run copies hold (counted in the "
             "memory budget).", tally.dry_run_bytes)):
        yield GaugeMetricFamily(PREFIX + name, text, value=value)


def _standing_gauges(node: Node) -> Iterable[Metric]:
    """The standing attestation's platform, TCB, expiry, age and refresh interval."""
    standing = node.standing
    info = GaugeMetricFamily(
        PREFIX + "standing_attestation_info",
        "The standing attestation Results name now: platform, TDX TCB status (unknown for SNP "
        "and when unverifiable), the verification step reached or failed, and outcome (1).",
        labels=["platform", "tcb_status", "step", "outcome"])
    info.add_metric([standing.platform, standing.tcb_status, standing.step,
                     "ok" if standing.ok else "error"], 1)
    yield info
    yield GaugeMetricFamily(
        PREFIX + "standing_attestation_age_seconds",
        "Seconds since the standing attestation was made.",
        value=max(0.0, (datetime.now(UTC) - standing.made_at).total_seconds()))
    yield GaugeMetricFamily(
        PREFIX + "attestation_refresh_interval_seconds",
        "How often the standing attestation is remade (node.attestation_refresh_seconds).",
        value=node.settings.attestation_refresh_seconds)
    facts = standing.facts
    if facts is None:
        return
    svn = GaugeMetricFamily(
        PREFIX + "standing_attestation_tcb_svn",
        "SEV-SNP TCB component SVNs of the standing evidence, reported (REPORTED_TCB) and "
        "committed (COMMITTED_TCB).", labels=["tcb", "component"])
    for kind, values in (("reported", facts.reported_tcb), ("committed", facts.committed_tcb)):
        for component, value in sorted(values.items()):
            svn.add_metric([kind, component], value)
    yield svn
    if facts.earliest_expiry is not None:
        expiry = GaugeMetricFamily(
            PREFIX + "standing_attestation_expiry_seconds",
            "Seconds until the earliest expiry among the standing evidence's certificates and "
            "collateral, labelled with what expires then.", labels=["expiring"])
        left = (facts.earliest_expiry - datetime.now(UTC)).total_seconds()
        expiry.add_metric([facts.expiring], left)
        yield expiry


class ProcessMetrics:
    """Standard ``process_*`` metrics from ``/proc/self`` only.

    prometheus_client's own process collector needs ``/proc/stat`` for the boot time, which the
    service's ``ProcSubset=pid`` hides; the start time here comes from ``CLOCK_BOOTTIME``.
    """

    def __init__(self, proc_self: str = "/proc/self") -> None:
        self._dir = proc_self
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _max_fds(self) -> float | None:
        with open(os.path.join(self._dir, "limits"), encoding="ascii") as limits:
            for line in limits:
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    return None if soft == "unlimited" else float(soft)
        return None

    def collect(self) -> Iterable[Metric]:
        """CPU, memory, start time and file descriptors of this (main) process."""
        try:
            with open(os.path.join(self._dir, "stat"), "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            open_fds = len(os.listdir(os.path.join(self._dir, "fd")))
            max_fds = self._max_fds()
        except OSError:
            return
        utime, stime = float(fields[11]), float(fields[12])
        started_after_boot = float(fields[19]) / self._ticks
        boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        yield CounterMetricFamily("process_cpu_seconds_total",
                                  "Total user and system CPU time spent in seconds.",
                                  value=(utime + stime) / self._ticks)
        yield GaugeMetricFamily("process_virtual_memory_bytes",
                                "Virtual memory size in bytes.", value=float(fields[20]))
        yield GaugeMetricFamily("process_resident_memory_bytes",
                                "Resident memory size in bytes.",
                                value=float(fields[21]) * self._page)
        yield GaugeMetricFamily("process_start_time_seconds",
                                "Start time of the process since unix epoch in seconds.",
                                value=boot + started_after_boot)
        yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.",
                                value=open_fds)
        if max_fds is not None:
            yield GaugeMetricFamily("process_max_fds",
                                    "Maximum number of open file descriptors.", value=max_fds)


SHED_REASONS = ("Overloaded", "RateLimited")
CLOSE_REASONS = ("header_timeout", "body_timeout", "cap")


class NodeMetrics(NodeObserver, HttpObserver):
    """The node's metrics: observer hooks, the HTTP hooks, a registry and its /metrics server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Info(PREFIX.rstrip("_") + "_build", "Versions of this node build.",
             registry=r).info(build_labels())
        self.items_accepted = Counter(
            PREFIX + "items_accepted_total",
            "Items accepted and stored durably, by AO type (Module, Process, Message).",
            ["type"], registry=r)
        self.items_rejected = Counter(
            PREFIX + "items_rejected_total",
            "Items the node refused at ingest, by reason (the error class).",
            ["reason"], registry=r)
        self.evaluations = Counter(
            PREFIX + "evaluations_total",
            "Messages evaluated into a committed result, by outcome.",
            ["outcome"], registry=r)
        self.evaluation_seconds = Histogram(
            PREFIX + "evaluation_batch_duration_seconds",
            "Wall time of evaluating one batch of messages in a worker (round trip).",
            buckets=EVALUATION_BUCKETS, registry=r)
        self.results_signed = Counter(
            PREFIX + "results_signed_total", "Result items signed and stored.", registry=r)
        self.divergences = Counter(
            PREFIX + "evaluation_divergences_total",
            "Re-evaluations whose result differed from the recorded one (non-determinism).",
            registry=r)
        self.outbox_refused_messages = Counter(
            PREFIX + "outbox_refused_total",
            "Outgoing messages not sent because of an outbox limit (the sending result's Error "
            "says so), by reason: per_message or crank_window.", ["reason"], registry=r)
        for name in ("per_message", "crank_window"):
            self.outbox_refused_messages.labels(name)
        self.peer_refusals = Counter(
            PREFIX + "peer_refusals_total",
            "Pushed items (From-Process, owner another node) refused by the peer-trust gate, "
            "by reason (unverified is retryable; the others are final 403s).", ["reason"],
            registry=r)
        for name in PEER_REFUSALS:
            self.peer_refusals.labels(name)
        self.commits_deferred = Counter(
            PREFIX + "commits_deferred_total",
            "Evaluated batches whose results could not be stored because the disk is full; the "
            "process retries them by itself.", registry=r)
        self.worker_crashes = Counter(
            PREFIX + "worker_crashes_total",
            "Evaluation worker processes that died and were restarted.", registry=r)
        self.shard_restarts = Counter(
            PREFIX + "shard_restarts_total",
            "Shard processes that died and were started again by the front.", registry=r)
        self.process_moves = Counter(
            PREFIX + "process_moves_total",
            "Processes moved off a worker another process's evaluation held, to an idle or "
            "extra worker (reopened there from their checkpoint).", registry=r)
        self.checkpoints = Counter(
            PREFIX + "checkpoints_total", "Checkpoints attempted, by outcome (ok, error).",
            ["outcome"], registry=r)
        self.checkpoint_raw = Counter(
            PREFIX + "checkpoint_raw_bytes_total",
            "Bytes of process memory checkpointed (raw memory size).", registry=r)
        self.checkpoint_file = Counter(
            PREFIX + "checkpoint_file_bytes_total",
            "Checkpoint file bytes written (sparse image).", registry=r)
        self.checkpoint_seconds = Histogram(
            PREFIX + "checkpoint_duration_seconds",
            "Wall time of writing and recording one checkpoint.",
            buckets=CHECKPOINT_BUCKETS, registry=r)
        self.evictions = Counter(
            PREFIX + "evictions_total",
            "Idle process instances closed to stay within the memory budget.", registry=r)
        self.restores = Counter(
            PREFIX + "restores_total",
            "Evicted processes reopened from their checkpoint.", registry=r)
        self.restore_seconds = Histogram(
            PREFIX + "restore_duration_seconds",
            "Wall time of reopening one evicted process from its checkpoint (load and restore).",
            buckets=CHECKPOINT_BUCKETS, registry=r)
        self.attestations = Counter(
            PREFIX + "attestations_total",
            "Attestations made, by kind (standing, fresh) and outcome (ok, error).",
            ["kind", "outcome"], registry=r)
        self.evidence_verifications = Counter(
            PREFIX + "evidence_verifications_total",
            "Evidence verifications the node ran, by whose evidence (self), the step reached "
            "or failed, and outcome (ok, error).", ["whose", "step", "outcome"], registry=r)
        self.http_requests = Counter(
            PREFIX + "http_requests_total",
            "AO HTTP API requests, by route template, method and status code.",
            ["route", "method", "code"], registry=r)
        self.http_seconds = Histogram(
            PREFIX + "http_request_duration_seconds",
            "AO HTTP API request handling time, by route template and method.",
            ["route", "method"], buckets=HTTP_BUCKETS, registry=r)
        self.http_shed = Counter(
            PREFIX + "http_requests_shed_total",
            "AO HTTP API requests refused by a limit (429 RateLimited, 503 Overloaded), by "
            "route template and reason.", ["route", "reason"], registry=r)
        self.http_connections = Gauge(
            PREFIX + "http_connections_open", "Open AO HTTP API connections.", registry=r)
        self.http_closed = Counter(
            PREFIX + "http_connections_closed_total",
            "AO HTTP API connections the node closed, by reason (header_timeout, "
            "body_timeout, cap: refused past http.max_connections).", ["reason"], registry=r)
        self.http_waiters = Gauge(
            PREFIX + "http_result_waiters",
            "Result reads waiting for an evaluation (at most http.max_result_waiters).",
            registry=r)
        for name in CLOSE_REASONS:
            self.http_closed.labels(name)
        for name in OUTCOMES:
            self.evaluations.labels(name)
        for name in ("ok", "error"):
            self.checkpoints.labels(name)
        r.register(ProcessMetrics())
        self._attested_at: float | None = None
        self._lock = threading.Lock()
        self._node_state: _NodeState | None = None

    # --- NodeObserver ------------------------------------------------------------------------

    def item_accepted(self, kind: str) -> None:
        """Count an accepted item."""
        self.items_accepted.labels(kind).inc()

    def item_rejected(self, error: BaseException) -> None:
        """Count a refused item by its error class."""
        self.items_rejected.labels(reason(error)).inc()

    def batch_evaluated(self, messages: int, seconds: float) -> None:
        """Observe one batch's evaluation time."""
        self.evaluation_seconds.observe(seconds)

    def results_committed(self, results: Sequence[dict[str, Any]]) -> None:
        """Count committed results by outcome, and the result items signed."""
        for result in results:
            self.evaluations.labels(outcome(result)).inc()
        self.results_signed.inc(len(results))

    def divergence(self) -> None:
        """Count a re-evaluation that differed from the record."""
        self.divergences.inc()

    def outbox_refused(self, reason: str, count: int) -> None:
        """Count outgoing messages an outbox limit refused."""
        self.outbox_refused_messages.labels(reason).inc(count)

    def peer_refused(self, reason: str) -> None:
        """A push was refused by the peer-trust gate."""
        self.peer_refusals.labels(reason).inc()

    def commit_deferred(self) -> None:
        """Count a batch whose commit found the disk full."""
        self.commits_deferred.inc()

    def worker_crashed(self) -> None:
        """Count a worker restart."""
        self.worker_crashes.inc()

    def shard_restarted(self) -> None:
        """Count a shard process restart."""
        self.shard_restarts.inc()

    def process_moved(self) -> None:
        """Count a process moved to another worker."""
        self.process_moves.inc()

    def checkpointed(self, raw_bytes: int, file_bytes: int, seconds: float) -> None:
        """Count a checkpoint, its sizes and its time."""
        self.checkpoints.labels("ok").inc()
        self.checkpoint_raw.inc(raw_bytes)
        self.checkpoint_file.inc(file_bytes)
        self.checkpoint_seconds.observe(seconds)

    def checkpoint_failed(self) -> None:
        """Count a failed checkpoint."""
        self.checkpoints.labels("error").inc()

    def instance_evicted(self, nbytes: int, checkpointed: bool) -> None:
        """Count an eviction."""
        self.evictions.inc()

    def instance_restored(self, nbytes: int, seconds: float) -> None:
        """Count a restore and its time."""
        self.restores.inc()
        self.restore_seconds.observe(seconds)

    def attested(self, kind: str, ok: bool) -> None:
        """Count an attestation; a good one resets the attestation age."""
        self.attestations.labels(kind, "ok" if ok else "error").inc()
        if ok:
            with self._lock:
                self._attested_at = time.monotonic()

    def evidence_verified(self, whose: str, step: str, ok: bool) -> None:
        """Count one verification by the step it reached (ok) or failed at."""
        self.evidence_verifications.labels(whose, step, "ok" if ok else "error").inc()

    # --- the rest ----------------------------------------------------------------------------

    def attestation_age(self) -> float | None:
        """Seconds since the last good attestation, ``None`` before the first."""
        with self._lock:
            at = self._attested_at
        return None if at is None else time.monotonic() - at

    def attach(self, node: Node) -> None:
        """Export ``node``'s scrape-time gauges (queue depths, broken processes)."""
        if self._node_state is None:
            self._node_state = _NodeState(self, node)
            self.registry.register(self._node_state)

    def observe_http(self, request: web.Request, status: int, why: str,
                     seconds: float) -> None:
        """The AO HTTP API's per-request hook (see :func:`appliance.api.http.make_app`)."""
        route, method = route_template(request), http_method(request)
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_seconds.labels(route, method).observe(seconds)
        if why in SHED_REASONS:
            self.http_shed.labels(route, why).inc()

    def connection_opened(self) -> None:
        """Count an open connection."""
        self.http_connections.inc()

    def connection_closed(self, reason: str | None) -> None:
        """Count a closed connection (and why the node closed it)."""
        if reason != "cap":
            self.http_connections.dec()
        if reason is not None:
            self.http_closed.labels(reason).inc()

    def result_waiters(self, delta: int) -> None:
        """Track the waiting result reads."""
        self.http_waiters.inc(delta)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """(body, content type) of a scrape, in the format ``accept`` asks for."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    async def _scrape(self, request: web.Request) -> web.Response:
        body, content_type = await asyncio.to_thread(self.exposition,
                                                     request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    def app(self) -> web.Application:
        """An aiohttp application serving ``GET /metrics``."""
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        return app

    async def start_server(self, host: str, port: int) -> web.AppRunner:
        """Serve /metrics on ``host:port`` (0 picks a port; read it from ``runner.addresses``)."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner
