"""The node's tunables in one frozen place (the YAML config maps onto this)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from appliance.compute import ComputeLimits
from appliance.errors import ConfigError


def default_memory_budget() -> int:
    """Half the machine's RAM: the other half is left to the node and worker processes
    themselves, SQLite and the page cache that checkpoint restores read from, and to the
    instances running while over budget (only idle ones can be evicted)."""
    try:
        return max(1 << 30, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2)
    except (ValueError, OSError):
        return 4 << 30


@dataclass(frozen=True)
class NodeOptions:
    """The node tunables a configuration file may set (section ``node``).

    ``max_item_bytes`` bounds any data item the node accepts; ``max_push_depth`` bounds chains
    of messages pushed from results (a ping-pong loop stops there); checkpoints are taken every
    ``checkpoint_every_messages`` evaluated messages or ``checkpoint_every_seconds``, whichever
    comes first; ``block_height`` is what assignments carry (the node has no Arweave view of its
    own: an operator may set it, see docs); the standing attestation is remade every
    ``attestation_refresh_seconds``; every ``cron_tick_seconds`` the node evaluates its
    cron processes' cron messages up to now, as AO's MU monitor does by polling ``/cron`` (0:
    only on reads).

    Dry-runs (anonymous reads) evaluate on a copy of the process in a separate worker with
    their own limits: ``dry_run_fuel`` and ``dry_run_wall_clock_seconds`` (never above the
    process's own), at most ``dry_run_concurrency`` at once (503 past it).
    ``state_checkpoint_seconds``: ``GET /state`` serves the newest checkpoint and writes a new one
    only when the process advanced and the last one it forced is older than this.
    ``memory_budget_bytes``: RAM the resident instances (memory plus rollback base, dry-run
    copies included) may hold; past it, idle ones are checkpointed and closed, least recently
    used first, and restored from their checkpoint when next needed (default: half the
    machine's RAM, see :func:`default_memory_budget`).
    ``move_after_seconds``: a process whose next call would wait longer than this behind
    another process's evaluation in their shared worker moves to an idle or extra worker and is
    reopened there from its checkpoint (0: processes never move).
    ``shards``: shard processes that own the node's processes between them, each with its own
    store and its share of ``workers`` and ``memory_budget_bytes`` (1: the node is one process
    and its workers).
    """

    max_item_bytes: int = 16 * 1024 * 1024
    max_push_depth: int = 64
    batch_size: int = 64
    workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    checkpoint_every_messages: int = 1000
    checkpoint_every_seconds: float = 3600.0
    block_height: int = 0
    result_wait_seconds: float = 30.0
    attestation_refresh_seconds: float = 86400.0
    cron_tick_seconds: float = 1.0
    dry_run_fuel: int = 1_000_000_000_000
    dry_run_wall_clock_seconds: float = 10.0
    dry_run_concurrency: int = 2
    state_checkpoint_seconds: float = 60.0
    max_outbox_messages: int = 512
    max_crank_messages: int = 1000
    crank_window_seconds: float = 10.0
    memory_budget_bytes: int = field(default_factory=default_memory_budget)
    move_after_seconds: float = 0.5
    shards: int = 1

    def __post_init__(self) -> None:
        if self.max_item_bytes < 1024:
            raise ConfigError("max_item_bytes must be at least 1024")
        if self.max_push_depth < 1 or self.batch_size < 1 or self.workers < 1:
            raise ConfigError("max_push_depth, batch_size and workers must be positive")
        if self.attestation_refresh_seconds <= 0:
            raise ConfigError("attestation_refresh_seconds must be positive")
        if self.checkpoint_every_messages < 1 or self.checkpoint_every_seconds <= 0:
            raise ConfigError("checkpoint intervals must be positive")
        if self.cron_tick_seconds < 0:
            raise ConfigError("cron_tick_seconds cannot be negative")
        if self.dry_run_fuel < 1 or self.dry_run_wall_clock_seconds <= 0 \
                or self.dry_run_concurrency < 1:
            raise ConfigError("dry-run limits must be positive")
        if self.state_checkpoint_seconds < 0:
            raise ConfigError("state_checkpoint_seconds cannot be negative")
        if self.max_outbox_messages < 1 or self.max_crank_messages < 1 \
                or self.crank_window_seconds <= 0:
            raise ConfigError("outbox and crank limits must be positive")
        if self.block_height < 0:
            raise ConfigError("block_height cannot be negative")
        if self.move_after_seconds < 0:
            raise ConfigError("move_after_seconds cannot be negative")
        if self.memory_budget_bytes < 1:
            raise ConfigError("memory_budget_bytes must be positive")
        if self.shards < 1:
            raise ConfigError("shards must be positive")



@dataclass(frozen=True, kw_only=True)
class NodeSettings(NodeOptions):
    """Everything the node core needs besides its identity and evidence provider."""

    data_dir: Path
    limits: ComputeLimits = field(default_factory=ComputeLimits)
    peered: bool = False
    """The node has peers (``network.peers``): outbox items for targets it does not host are
    recorded ``pending`` for the courier, not ``pending-remote``."""

    def for_shard(self, index: int, count: int) -> NodeSettings:
        """These settings for shard ``index`` of ``count``: its own data dir (shard 0 in the data
        dir itself, so a node made before shards existed is a one-shard node; the others under
        ``shards/``), a share of the workers and of the memory budget."""
        data_dir = self.data_dir if index == 0 else self.data_dir / "shards" / str(index)
        return dataclasses.replace(self, data_dir=data_dir,
                                   workers=max(1, -(-self.workers // count)),
                                   memory_budget_bytes=max(1, self.memory_budget_bytes // count))

    @property
    def checkpoint_dir(self) -> Path:
        """Where checkpoint blobs live."""
        return self.data_dir / "checkpoints"

    @property
    def module_dir(self) -> Path:
        """Where module binaries are kept for the evaluator workers."""
        return self.data_dir / "modules"

    @property
    def cache_dir(self) -> Path:
        """Compiled-module cache."""
        return self.data_dir / "cache"
