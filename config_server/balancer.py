"""The balancer loop: drain removed shards, auto-split big chunks, even out chunks.

Every ``interval`` seconds while enabled (SetBalancerState, persisted; ``--no-balancer``
starts it disabled), one round:

1. databases whose primary shard is draining get another primary: at once when that
   shard holds no unsharded data of theirs; otherwise by movePrimary (``PrimaryMover``,
   one database at a time, to the non-draining shard with the fewest databases) once
   the shard has no chunks left and ``primary_move_delay`` seconds have passed since
   (the move blocks the database's unsharded writes while it copies them, so it comes
   last; the delay leaves the operator time to move it elsewhere by hand). Without a
   mover such databases block the removal;
2. auto-split: each chunk owner reports ``ChunkStats``; a chunk over
   ``chunk_size_bytes`` is split at the median the owner's ``SplitVector`` gives,
   or marked jumbo when it cannot be split (one key value): never retried while
   jumbo, unmarked when it fits again;
3. migrations planned by ``balancer_policy.plan_round`` (drains first; threshold in
   chunks) run in parallel on disjoint shard pairs; the round waits for them.

Counters: ``rounds`` counts since this process started (in memory); auto-splits and
committed/failed migrations (every migration, manual ones too) are persisted in the
metadata store and survive restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import bson

from config_server import balancer_policy, metrics
from config_server.catalog import AUTO_SPLITS_KEY, Catalog
from config_server.migrations import Migrator
from config_server.model import ChunkRecord, CollectionRecord, MigrationRecord, ShardRecord
from config_server.move_primary import PrimaryMover
from config_server.shard_notifier import ShardNotifier
from config_server.shard_removal import ShardRemoval
from config_server.shard_rpc import ShardRpc
from config_server.store import retry_conflicts
from lauradb.aio import wait_event
from lauradb.errors import ErrorCode, LauraError

log = logging.getLogger("lauradb.config.balancer")

ENABLED_KEY = "balancer_enabled"
DEFAULT_INTERVAL_S = 10.0
DEFAULT_CHUNK_SIZE_BYTES = 1024 * 1024
DEFAULT_THRESHOLD_CHUNKS = 2
FAILED_COOLDOWN_S = 5.0  # at least; a chunk whose migration failed waits 5 rounds
DEFAULT_PRIMARY_MOVE_DELAY_S = 2.0


@dataclass(frozen=True)
class BalancerSettings:
    interval: float = DEFAULT_INTERVAL_S
    chunk_size_bytes: int = DEFAULT_CHUNK_SIZE_BYTES
    threshold: int = DEFAULT_THRESHOLD_CHUNKS  # chunks (see balancer_policy)
    start_enabled: bool = True
    primary_move_delay: float = DEFAULT_PRIMARY_MOVE_DELAY_S


@dataclass(frozen=True)
class BalancerStatus:
    enabled: bool
    rounds: int
    splits: int
    migrations_committed: int
    migrations_failed: int
    in_progress: list[MigrationRecord]
    jumbo_chunks: list[str]
    last_error: str


@dataclass
class RoundReport:
    splits: int = 0
    jumbo: int = 0
    committed: int = 0
    failed: int = 0
    primaries_moved: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def did_something(self) -> bool:
        return bool(
            self.splits or self.jumbo or self.committed or self.failed or self.primaries_moved
        )


class Balancer:
    def __init__(
        self,
        catalog: Catalog,
        migrator: Migrator,
        notifier: ShardNotifier,
        rpc: ShardRpc,
        removal: ShardRemoval,
        settings: BalancerSettings | None = None,
        mover: PrimaryMover | None = None,
    ) -> None:
        self.catalog = catalog
        self.mover = mover
        self.migrator = migrator
        self.notifier = notifier
        self.rpc = rpc
        self.removal = removal
        self.settings = settings or BalancerSettings()
        if self.settings.threshold < 1:
            raise LauraError(ErrorCode.BAD_VALUE, "the balance threshold must be >= 1 chunk")
        self.rounds = 0
        self.last_error = ""
        self.blocked: dict[str, list[str]] = {}  # draining shard -> databases it blocks on
        self._avoid_until: dict[str, float] = {}  # chunk id -> monotonic time
        self._chunk_free_since: dict[str, float] = {}  # draining shard -> monotonic time
        self._primary_retry_at: dict[str, float] = {}  # database -> monotonic time
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._enabled = self._load_enabled()

    @retry_conflicts
    def _load_enabled(self) -> bool:
        with self.catalog.store.transaction() as tx:
            if not self.settings.start_enabled:
                tx.set_meta(ENABLED_KEY, "0")
            return tx.get_meta(ENABLED_KEY) != "0"

    def reload_enabled(self) -> bool:
        """Read the persisted on/off flag again (a config server taking over as
        leader: another one may have changed it)."""
        with self.catalog.store.snapshot() as tx:
            self._enabled = tx.get_meta(ENABLED_KEY) != "0"
        return self._enabled

    # ------------------------------------------------------------------ control

    @property
    def enabled(self) -> bool:
        return self._enabled

    @retry_conflicts
    def set_enabled(self, enabled: bool) -> bool:
        with self.catalog.store.transaction() as tx:
            tx.set_meta(ENABLED_KEY, "1" if enabled else "0")
        if enabled != self._enabled:
            log.info("balancer %s", "enabled" if enabled else "disabled")
        self._enabled = enabled
        if enabled:
            self.wake()
        return enabled

    def wake(self) -> None:
        """Run a round soon (a shard was added or is being removed, ...)."""
        self._wake.set()

    def blocked_databases(self, shard_id: str) -> list[str]:
        return list(self.blocked.get(shard_id, []))

    def status(self) -> BalancerStatus:
        committed, failed = self.migrator.meta.counters()
        with self.catalog.store.snapshot() as tx:
            splits = tx.counter(AUTO_SPLITS_KEY)
        return BalancerStatus(
            enabled=self._enabled,
            rounds=self.rounds,
            splits=splits,
            migrations_committed=committed,
            migrations_failed=failed,
            in_progress=self.migrator.meta.running(),
            jumbo_chunks=[c.chunk_id for c in self.catalog.jumbo_chunks()],
            last_error=self.last_error,
        )

    # ------------------------------------------------------------------ loop

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="balancer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await wait_event(self._wake, self.settings.interval)
            self._wake.clear()
            if not self._enabled:
                continue
            try:
                await self.run_round()
            except asyncio.CancelledError:
                raise
            except LauraError as err:
                self.last_error = str(err)
                log.warning("balancer round failed: %s", err)
            except Exception as exc:  # a bug: keep balancing next round
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("balancer round failed")

    # ------------------------------------------------------------------ a round

    async def run_round(self) -> RoundReport:
        self.rounds += 1
        metrics.BALANCER_ROUNDS.inc()
        report = RoundReport()
        shards = self.catalog.list_shards()
        by_id = {s.shard_id: s for s in shards}
        draining = {s.shard_id for s in shards if s.draining}
        self.blocked = {k: v for k, v in self.blocked.items() if k in draining}
        self._chunk_free_since = {
            k: v for k, v in self._chunk_free_since.items() if k in draining
        }
        for shard_id in sorted(draining):
            await self._drain_primaries(by_id[shard_id], report)
        collections = self.catalog.list_collections()
        for coll in collections:
            await self._auto_split(coll, by_id, report)
        if self._enabled:
            await self._balance(collections, shards, draining, report)
        if report.errors:
            self.last_error = report.errors[-1]
        if report.did_something:
            committed, failed = self.migrator.meta.counters()
            log.info(
                "balancer round %d: %d split(s), %d jumbo, %d migration(s) committed, "
                "%d failed, %d primary move(s) (total: %d committed, %d failed)",
                self.rounds, report.splits, report.jumbo, report.committed, report.failed,
                report.primaries_moved, committed, failed,
            )
        return report

    async def _drain_primaries(self, shard: ShardRecord, report: RoundReport) -> None:
        views = [
            v for v in self.catalog.list_databases() if v.database.primary_shard == shard.shard_id
        ]
        blocked: list[str] = []
        for view in views:
            name = view.database.name
            holding = await self._holds_unsharded_data(shard, name, set(view.sharded_collections))
            if holding:
                blocked.append(name)
                continue
            target = self.removal.reassign_primary(name, shard.shard_id)
            if target is None:
                continue
            report.primaries_moved += 1
            log.info("database %s: primary shard %s -> %s (draining)", name, shard.shard_id, target)
            targets = [
                s for s in self.catalog.list_shards() if s.shard_id in (shard.shard_id, target)
            ]
            await self.notifier.refresh(targets, name, "")
        if blocked and self.mover is not None and self._may_move_primaries(shard):
            moved = await self._move_primary(blocked[0], shard, report)
            if moved:
                blocked = blocked[1:]
        if blocked:
            self.blocked[shard.shard_id] = blocked
        else:
            self.blocked.pop(shard.shard_id, None)

    async def _holds_unsharded_data(
        self, shard: ShardRecord, database: str, sharded: set[str]
    ) -> bool:
        """Whether the shard holds documents of unsharded collections of the database
        (True when it cannot tell)."""
        try:
            names = await self.rpc.list_collections(shard, database)
        except LauraError as err:
            log.info(
                "draining %s: cannot list collections of %s: %s", shard.shard_id, database, err
            )
            return True
        for coll in names:
            if coll in sharded or coll.startswith("system."):
                continue
            count = await self.notifier.count_documents(shard, database, coll)
            if count is None or count > 0:
                return True
        return False

    def _may_move_primaries(self, shard: ShardRecord) -> bool:
        """movePrimary off a draining shard: once its chunks are gone (and no migration
        involves it) for ``primary_move_delay`` seconds."""
        now = time.monotonic()
        busy = shard.shard_id in self.migrator.busy_shards()
        if busy or self.catalog.list_chunks(shard_id=shard.shard_id):
            self._chunk_free_since.pop(shard.shard_id, None)
            return False
        since = self._chunk_free_since.setdefault(shard.shard_id, now)
        return now - since >= self.settings.primary_move_delay

    async def _move_primary(self, database: str, shard: ShardRecord, report: RoundReport) -> bool:
        assert self.mover is not None
        now = time.monotonic()
        if self._primary_retry_at.get(database, 0.0) > now:
            return False
        candidates = [s.shard_id for s in self.catalog.list_shards() if not s.draining]
        if not candidates:
            return False
        load = dict.fromkeys(candidates, 0)
        for view in self.catalog.list_databases():
            if view.database.primary_shard in load:
                load[view.database.primary_shard] += 1
        target = min(candidates, key=lambda s: (load[s], s))
        try:
            result = await self.mover.move(database, target)
        except LauraError as err:
            report.errors.append(f"movePrimary of {database} to {target}: {err}")
            log.warning("draining %s: movePrimary of %s to %s failed: %s",
                        shard.shard_id, database, target, err)
            self._primary_retry_at[database] = now + max(
                FAILED_COOLDOWN_S, 5 * self.settings.interval
            )
            return False
        self._primary_retry_at.pop(database, None)
        report.primaries_moved += 1
        log.info(
            "database %s: primary shard %s -> %s by movePrimary (draining; %d collection(s), "
            "%d document(s))", database, shard.shard_id, target, len(result.collections),
            result.documents,
        )
        return True

    async def _auto_split(
        self, coll: CollectionRecord, by_id: dict[str, ShardRecord], report: RoundReport
    ) -> None:
        chunks = self.catalog.list_chunks(coll.namespace)
        owners = sorted({c.shard_id for c in chunks if c.shard_id in by_id})
        results = await asyncio.gather(
            *(self.rpc.chunk_stats(by_id[s], coll.database, coll.collection) for s in owners),
            return_exceptions=True,
        )
        current = {c.chunk_id: c for c in chunks}
        sizes: dict[str, int] = {}
        for shard_id, result in zip(owners, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, LauraError):
                    raise result
                if result.code != ErrorCode.NOT_IMPLEMENTED:
                    log.debug("ChunkStats(%s) on %s: %s", coll.namespace, shard_id, result)
                continue
            for stat in result:
                chunk = current.get(stat.chunk_id)
                if chunk is not None and chunk.shard_id == shard_id:
                    sizes[stat.chunk_id] = int(stat.bytes)
        moving = {m.chunk_id for m in self.migrator.meta.running()}
        decisions = balancer_policy.split_decisions(
            [balancer_policy.PolicyChunk(c.chunk_id, c.shard_id, c.jumbo) for c in chunks],
            sizes,
            self.settings.chunk_size_bytes,
            moving=moving,
        )
        for chunk_id in decisions.unjumbo:
            if self.catalog.set_chunk_jumbo(chunk_id, False):
                log.info("chunk %s of %s fits again: no longer jumbo", chunk_id, coll.namespace)
        for chunk_id in decisions.split:
            await self._split_one(coll, current[chunk_id], by_id[current[chunk_id].shard_id],
                                  sizes[chunk_id], report)

    async def _split_one(
        self,
        coll: CollectionRecord,
        chunk: ChunkRecord,
        owner: ShardRecord,
        size: int,
        report: RoundReport,
    ) -> None:
        try:
            resp = await self.rpc.split_vector(
                owner, coll.database, coll.collection, chunk.min_key, chunk.max_key
            )
        except LauraError as err:
            log.info("SplitVector for chunk %s of %s on %s: %s",
                     chunk.chunk_id, coll.namespace, owner.shard_id, err)
            return
        if resp.jumbo or not resp.split_points:
            if self.catalog.set_chunk_jumbo(chunk.chunk_id, True):
                report.jumbo += 1
                log.info(
                    "chunk %s of %s [%s, %s) on %s is jumbo (%d bytes over %d, cannot split)",
                    chunk.chunk_id, coll.namespace, bson.decode(chunk.min_key),
                    bson.decode(chunk.max_key), owner.shard_id, size,
                    self.settings.chunk_size_bytes,
                )
            return
        point: dict[str, Any] = bson.decode(resp.split_points[0])
        try:
            left, right = self.catalog.split_chunk(chunk.chunk_id, point, auto=True)
        except LauraError as err:
            report.errors.append(f"auto-split of chunk {chunk.chunk_id}: {err}")
            log.warning("auto-split of chunk %s of %s at %s: %s",
                        chunk.chunk_id, coll.namespace, point, err)
            return
        report.splits += 1
        metrics.SPLITS.inc()
        log.info(
            "auto-split chunk %s of %s on %s at %s (%d bytes > %d): %s, %s",
            chunk.chunk_id, coll.namespace, owner.shard_id, point, size,
            self.settings.chunk_size_bytes, left.chunk_id, right.chunk_id,
        )
        await self.notifier.refresh([owner], coll.database, coll.collection)

    async def _balance(
        self,
        collections: list[CollectionRecord],
        shards: list[ShardRecord],
        draining: set[str],
        report: RoundReport,
    ) -> None:
        now = time.monotonic()
        self._avoid_until = {c: t for c, t in self._avoid_until.items() if t > now}
        unavailable = self._down_shards()
        plan = balancer_policy.plan_round(
            {
                coll.namespace: [
                    balancer_policy.PolicyChunk(c.chunk_id, c.shard_id, c.jumbo)
                    for c in self.catalog.list_chunks(coll.namespace)
                ]
                for coll in collections
            },
            [s.shard_id for s in shards],
            draining=draining,
            busy=self.migrator.busy_shards() | unavailable,
            threshold=self.settings.threshold,
            avoid=set(self._avoid_until),
        )
        if plan:
            await asyncio.gather(*(self._move(m, report) for m in plan))

    def _down_shards(self) -> set[str]:
        """Shards whose registered processes all missed their heartbeats: they take
        part in no migration until one is back (a shard never registered counts up)."""
        up: dict[str, bool] = {}
        for node in self.catalog.list_nodes():
            if node.shard_id:
                up[node.shard_id] = up.get(node.shard_id, False) or node.up
        return {shard_id for shard_id, alive in up.items() if not alive}

    async def _move(self, move: balancer_policy.Move, report: RoundReport) -> None:
        try:
            outcome = await self.migrator.migrate(
                move.chunk_id, move.from_shard, move.to_shard, reason=f"balancer {move.reason}"
            )
        except LauraError as err:  # changed meanwhile (manual migration, split, ...)
            log.info("balancer: cannot move chunk %s of %s: %s", move.chunk_id, move.namespace, err)
            return
        if outcome.success:
            report.committed += 1
            return
        report.failed += 1
        report.errors.append(f"migration of chunk {move.chunk_id}: {outcome.record.error}")
        cooldown = max(FAILED_COOLDOWN_S, 5 * self.settings.interval)
        self._avoid_until[move.chunk_id] = time.monotonic() + cooldown
