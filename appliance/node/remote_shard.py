"""The front's handle on a shard running in its own process (``serve --shards N``).

A :class:`RemoteShard` answers the calls the :class:`~appliance.node.node.Node` façade makes of
a shard by calling the shard process over a :class:`~appliance.node.channel.Channel`, and answers
the shard's router calls with the router the façade gave it. It starts the process, and restarts
it when it dies (a shard's crash restarts that shard only: the others and the front go on); while
it is down, calls about its processes fail with :class:`~appliance.errors.ShardUnavailable`
(HTTP 503 with ``Retry-After``). A restarted shard resumes from its own store like a node after
a crash (DESIGN §5).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, ShardUnavailable
from appliance.logfmt import fields
from appliance.network.courier import Route, RouteFn
from appliance.node.channel import Channel
from appliance.node.observer import NodeObserver, ProgressListener, ProgressListeners
from appliance.node.residency import Tally
from appliance.node.routing import ShardRouter
from appliance.node.settings import NodeSettings
from appliance.node.shard_host import (
    FRONT_CALLS,
    FRONT_NOTES,
    OBSERVER_HOOKS,
    SHARD_CALLS,
    ShardBoot,
)
from appliance.node.standing import StandingAttestation
from attestation.evidence import Platform

log = logging.getLogger("appliance.shards")

START_TIMEOUT_SECONDS = 300.0  # opening a large store and the first attestation
STOP_TIMEOUT_SECONDS = 60.0
RESTART_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
ROUTER_LOOKUPS = frozenset({"owns", "places"})
"""Router calls a shard makes that the front answers from its placement alone (never blocking):
on the channel's reading thread, not its pool (a shard asks ``owns`` for every outbox item to a
target it does not hold, a wallet say)."""


class RemoteShard:
    """A shard in a process of its own; see the module docstring."""

    def __init__(self, boot: ShardBoot, observer: NodeObserver) -> None:
        self.index = boot.index
        self._boot = boot
        self._observer = observer
        self._listeners = ProgressListeners()
        self._router: ShardRouter | None = None
        self._peer_route: RouteFn | None = None
        self._closing = threading.Event()
        self._channel: Channel | None = None
        self._ready = threading.Event()
        self._process = self._spawn()
        self._supervisor: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The shard process's pid (a new one after a restart)."""
        return self._process.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        # The child's PR_SET_PDEATHSIG fires when the spawning *thread* exits: shards are spawned
        # by the thread that makes the node (it outlives it) and by this shard's supervisor.
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance.node.shard_host", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),))
        theirs.close()
        boot = Connection(os.dup(ours.fileno()))
        try:
            boot.send_bytes(pickle.dumps(self._boot))
        finally:
            boot.close()
        self._ready.clear()
        self._channel = Channel(ours, self, calls=FRONT_CALLS, notes=FRONT_NOTES,
                                inline=ROUTER_LOOKUPS,
                                name=f"front{self.index}")
        return process

    def wait_ready(self) -> None:
        """Wait until the shard process has opened its store (raises if it exited first)."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._ready.wait(0.2):
            code = self._process.poll()
            if code is not None:
                raise ApplianceError(f"shard {self.index} exited with code {code} while "
                                     "starting (its log above says why)")
            if time.monotonic() > deadline:
                self._process.kill()
                raise ApplianceError(f"shard {self.index} did not start within "
                                     f"{START_TIMEOUT_SECONDS:.0f} s")

    def start(self, router: ShardRouter) -> None:
        """Give the shard its router (through this front) and watch its process from now on."""
        self._router = router
        self._call("start")
        self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                            name=f"shard{self.index}-supervisor")
        self._supervisor.start()

    def close(self) -> None:
        """Have the shard finish in-flight work and stop, then wait for its process."""
        self._closing.set()
        with contextlib.suppress(ShardUnavailable):
            self._call("close")
        if self._channel is not None:
            self._channel.close()
        try:
            self._process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            log.error("shard %d did not stop within %.0f s; killing it", self.index,
                      STOP_TIMEOUT_SECONDS)
            self._process.kill()
            self._process.wait()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)

    def _supervise(self) -> None:
        backoff = 0
        while True:
            code = self._process.wait()
            if self._closing.is_set():
                return
            log.error("%s", fields("shard process exited; restarting it", shard=self.index,
                                   code=code))
            self._observer.shard_restarted()
            while not self._closing.is_set():
                time.sleep(RESTART_BACKOFF_SECONDS[min(backoff,
                                                       len(RESTART_BACKOFF_SECONDS) - 1)])
                backoff += 1
                try:
                    if self._channel is not None:
                        self._channel.close()
                    self._process = self._spawn()
                    self.wait_ready()
                    self._call("start")
                    if self._peer_route is not None:
                        self._call("connect_peers")
                except ApplianceError as exc:
                    log.error("%s", fields("shard restart failed", shard=self.index,
                                           error=str(exc)))
                    continue
                log.info("%s", fields("shard restarted", shard=self.index,
                                      pid=self._process.pid))
                break
            else:
                return
            started = time.monotonic()
            self._process.wait()
            if time.monotonic() - started > 60:  # it ran a while: the next restart is quick
                backoff = 0

    # --- calls to the shard -------------------------------------------------------------------

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._up().call(method, *args, **kwargs)

    def submit(self, method: str, *args: Any) -> Future[Any]:
        """The call ``method(*args)`` of the shard process without waiting for it: the future
        of its answer (:meth:`Channel.submit`)."""
        if method not in SHARD_CALLS:
            raise AttributeError(method)
        return self._up().submit(method, *args)

    def _up(self) -> Channel:
        channel = self._channel
        if channel is None or not self._ready.is_set():
            raise ShardUnavailable(f"shard {self.index} is restarting", retry_after=2.0)
        return channel

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in SHARD_CALLS:
            raise AttributeError(name)
        return functools.partial(self._call, name)

    @property
    def standing(self) -> StandingAttestation:
        """The shard's standing attestation."""
        value: StandingAttestation = self._call("standing")
        return value

    @property
    def attestation_id(self) -> str:
        """The standing attestation new Results of this shard name."""
        return str(self._call("attestation_id"))

    def memory(self) -> tuple[Tally, int]:
        """Resident and evicted instances of this shard and its memory budget."""
        value: tuple[Tally, int] = self._call("memory")
        return value

    def add_progress_listener(self, listener: ProgressListener) -> None:
        """Call ``listener(process_id, slot)`` when the shard reports progress."""
        self._listeners.add(listener)

    def remove_progress_listener(self, listener: ProgressListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    # --- what the shard process calls and tells --------------------------------------------------

    def ready(self) -> None:
        """The shard process is up (note)."""
        self._ready.set()

    def progress(self, process_id: str, slot: int) -> None:
        """A process of the shard made progress (note)."""
        self._listeners.notify(process_id, slot)

    def observe(self, hook: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The shard observed something for metrics (note)."""
        if hook in OBSERVER_HOOKS:
            getattr(self._observer, hook)(*args, **kwargs)

    def owns(self, process_id: str) -> bool:
        """Router call: does this shard own ``process_id``."""
        return self._routed().owns(process_id)

    def places(self, process_id: str) -> bool:
        """Router call: is a new process ``process_id`` placed on this shard."""
        return self._routed().places(process_id)

    def placed(self, process_id: str) -> None:
        """The shard holds ``process_id`` now (note)."""
        self._routed().placed(process_id)

    def push(self, target: str, raw: bytes, kind: str, push_depth: int) -> None:
        """Router call: deliver to the owner of ``target``."""
        self._routed().push(target, raw, kind, push_depth)

    def module(self, module_id: str) -> bytes | None:
        """Router call: the Module item from any shard."""
        return self._routed().module(module_id)

    def connect_peers(self, route: RouteFn) -> None:
        """Start the shard's courier (again after a restart); it asks ``route`` through this
        front where items go."""
        self._peer_route = route
        self._call("connect_peers")

    def route(self, kind: str, target: str, scheduler: str | None) -> Route:
        """Router call: where the courier pushes an outbox item."""
        if self._peer_route is None:
            return Route()
        return self._peer_route(kind, target, scheduler)

    def _routed(self) -> ShardRouter:
        if self._router is None:
            raise ShardUnavailable("the node is still starting", retry_after=1.0)
        return self._router


def process_shards(settings: NodeSettings, *, key_dir: Path, tee: Platform, tee_state_dir: Path,
                   config_digest: bytes, log_level: str,
                   observer: NodeObserver) -> list[RemoteShard]:
    """Start ``settings.shards`` shard processes (all at once) and wait until all are up; the
    key is read from ``key_dir``, evidence made by ``tee`` (with its state in
    ``tee_state_dir``)."""
    boots = [ShardBoot(index=k, settings=settings.for_shard(k, settings.shards), key_dir=key_dir,
                       tee=tee.value, tee_state_dir=tee_state_dir, config_digest=config_digest,
                       log_level=log_level) for k in range(settings.shards)]
    shards = [RemoteShard(boot, observer) for boot in boots]
    try:
        for shard in shards:
            shard.wait_ready()
    except BaseException:
        for shard in shards:
            shard._closing.set()
            shard._process.kill()
        raise
    return shards
