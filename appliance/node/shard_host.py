"""The shard process: one :class:`~appliance.node.shard.Shard` run on its own, driven by the front.

The front (``serve --shards N``) starts ``python -m appliance.node.shard_host FD`` for each shard
with one end of a socket pair as ``FD``, sends it a :class:`ShardBoot` and then talks to it over a
:class:`~appliance.node.channel.Channel`: the front calls the shard's reads and writes
(:data:`SHARD_CALLS`), the shard calls the front for what its :class:`~appliance.node.routing
.ShardRouter` needs (:data:`FRONT_CALLS`) and tells it of progress and of what it observed
(:data:`FRONT_NOTES`).

The shard process holds the node key (it signs Assignments and Results) and never runs guest
code: its evaluation workers are processes of their own, as in a one-shard node. It ignores
SIGINT and SIGTERM (the front stops it, so a Ctrl-C or a service stop reaching the whole process
group finishes in-flight work in order) and dies with the front: a front killed with -9 takes its
shards with it, and the restarted front's shards resume from their stores as after any crash.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import pickle
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

from appliance.network.courier import Route
from appliance.node.channel import Channel
from appliance.node.identity import NodeIdentity
from appliance.node.observer import NodeObserver
from appliance.node.settings import NodeSettings
from appliance.node.shard import Shard
from attestation.evidence import EvidenceProvider
from attestation.providers import provider_for

log = logging.getLogger("appliance.shard")

# What the front may call on a shard: the Shard methods and attributes the Node façade uses.
SHARD_CALLS = frozenset({
    "accept", "attest", "attestation_id", "blocks", "broken_count", "checkpoint_digest",
    "checkpoint_now", "close", "connect_peers", "cron_page", "cron_results_between", "dry_run",
    "find_items",
    "ingest", "item_created_ms", "item_raw", "memory", "module_raw", "outbox_by_status",
    "outbox_failures",
    "process_ids", "process_info", "process_page", "publish_location", "refresh_attestation",
    "result_items", "result_now", "result_row", "results_from", "results_page", "schedule_items",
    "schedule_page", "scheduled", "standing", "start", "state", "status", "tick_crons"})
# What a shard may call on the front (its router) and tell it.
FRONT_CALLS = frozenset({"owns", "places", "push", "module", "route"})
FRONT_NOTES = frozenset({"ready", "progress", "observe", "placed"})
PR_SET_PDEATHSIG = 1  # prctl(2)
OBSERVER_HOOKS = frozenset(name for name in vars(NodeObserver) if not name.startswith("_"))


@dataclass(frozen=True)
class ShardBoot:
    """What a shard process is started with."""

    index: int
    settings: NodeSettings
    key_dir: Path  # where the node key file is
    tee: str  # the front's evidence provider, by platform name (never "auto")
    tee_state_dir: Path
    config_digest: bytes
    log_level: str


class FrontRouter:
    """The :class:`~appliance.node.routing.ShardRouter` of a shard process: the front routes."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def owns(self, process_id: str) -> bool:
        """Ask the front whether this shard owns ``process_id``."""
        return bool(self._channel.call("owns", process_id))

    def places(self, process_id: str) -> bool:
        """Ask the front whether a new process ``process_id`` goes on this shard."""
        return bool(self._channel.call("places", process_id))

    def placed(self, process_id: str) -> None:
        """Tell the front this shard holds ``process_id`` now (before anything that names it
        leaves this shard: notes and calls go out in order)."""
        self._channel.note("placed", process_id)

    def push(self, target: str, raw: bytes, kind: str, push_depth: int) -> None:
        """Have the front deliver the item to the shard owning ``target``."""
        self._channel.call("push", target, raw, kind, push_depth)

    def module(self, module_id: str) -> bytes | None:
        """The Module item from whichever shard holds it."""
        value = self._channel.call("module", module_id)
        return value if isinstance(value, bytes) else None

    def route(self, kind: str, target: str, scheduler: str | None) -> Route:
        """Ask the front's peer directory where an outbox item goes (the courier's route)."""
        value = self._channel.call("route", kind, target, scheduler)
        return value if isinstance(value, Route) else Route()


class ForwardingObserver(NodeObserver):
    """Hands every observer hook to the front, whose observer (metrics) counts it: as a
    :meth:`~appliance.node.channel.Channel.note_soon`, so it rides on the reply or note that
    follows it (and still arrives before them)."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def __getattribute__(self, name: str) -> Any:
        if name == "results_committed":  # the front counts outcomes: only the Errors travel
            channel_: Channel = object.__getattribute__(self, "_channel")
            return lambda results: channel_.note_soon("observe", name, (
                [{"Error": result.get("Error")} for result in results],), {})
        if name in OBSERVER_HOOKS:
            channel: Channel = object.__getattribute__(self, "_channel")
            return lambda *args, **kwargs: channel.note_soon("observe", name, args, kwargs)
        return object.__getattribute__(self, name)


class _Host:
    """The calls the front makes, answered by this process's shard."""

    def __init__(self) -> None:
        self.shard: Shard | None = None
        self.channel: Channel | None = None
        self.gone = threading.Event()

    def __getattr__(self, name: str) -> Any:
        if name not in SHARD_CALLS:
            raise AttributeError(name)
        return getattr(self.shard, name)

    def start(self) -> None:
        """Join the node: the front is the router."""
        assert self.shard is not None and self.channel is not None
        self.shard.start(FrontRouter(self.channel))

    def connect_peers(self) -> None:
        """Start the shard's courier; it asks the front where items go."""
        assert self.shard is not None and self.channel is not None
        self.shard.connect_peers(FrontRouter(self.channel).route)

    def close(self) -> None:
        """Finish in-flight work and stop the shard (the process exits when the front hangs
        up)."""
        assert self.shard is not None
        self.shard.close()
        self.shard = None

    def progressed(self, process_id: str, slot: int) -> None:
        """Tell the front a process made progress."""
        assert self.channel is not None
        self.channel.note("progress", process_id, slot)


def _provider(boot: ShardBoot) -> EvidenceProvider:
    provider = provider_for(boot.tee, boot.tee_state_dir)
    assert provider is not None  # a named platform never comes back None
    return provider


def run(sock: socket.socket) -> None:
    """Serve the front on ``sock`` until it hangs up."""
    boot_connection = Connection(os.dup(sock.fileno()))
    boot: ShardBoot = pickle.loads(boot_connection.recv_bytes())  # noqa: S301 - from the front
    boot_connection.close()
    logging.basicConfig(level=boot.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s "
                               f"shard={boot.index}")
    host = _Host()
    channel = Channel(sock, host, calls=SHARD_CALLS, notes=(), name=f"shard{boot.index}",
                      on_closed=host.gone.set)
    host.channel = channel
    identity = NodeIdentity.load_or_create(boot.key_dir)
    host.shard = Shard(boot.settings, identity, _provider(boot), boot.config_digest,
                       observer=ForwardingObserver(channel), resume=False)
    host.shard.add_progress_listener(host.progressed)
    channel.note("ready")
    host.gone.wait()
    if host.shard is not None:
        # The front died (it closes us before it stops): stop at once, as if killed with it.
        # Finishing in-flight work would race the shard a restarted front starts on this store.
        log.error("the front went away; shard %d stops now", boot.index)
        logging.shutdown()
        os._exit(1)


def _die_with_parent() -> None:
    """Have the kernel kill this process when the front dies (Linux ``PR_SET_PDEATHSIG``), even
    if no thread of ours notices; elsewhere the end-of-file on the channel stops it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the front died before we asked
        os._exit(1)


def main(argv: list[str]) -> NoReturn:
    """Entry point: ``python -m appliance.node.shard_host FD``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # where is it stuck: kill -USR1
    code = 0
    try:
        run(socket.socket(fileno=int(argv[1])))
    except BaseException:
        log.exception("shard process failed")
        code = 1
    logging.shutdown()
    os._exit(code)  # threads still blocked on a closed store or channel must not hold it up


if __name__ == "__main__":
    main(sys.argv)
