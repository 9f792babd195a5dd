"""A model-checking CRUD workload for migration tests (issue 5).

In the spirit of MongoDB's "chunk operations with CRUD" FSM workloads: several asyncio
client tasks each own a disjoint set of ``_id`` values (task ``t`` owns
``t * ID_SPACE + n``) and insert, update (``$set`` of a per-task sequence number and a
value, ``$inc`` of a counter), delete and read their own documents through one of the
routers (alternating), each keeping a model ``_id -> expected document | None``.

Every write carries a fresh per-task sequence number (``seq``), so re-reading the
document tells whether a write applied: after a failed write the task reads the
document back (retrying until the cluster answers) and updates its model from what it
finds (applied, not applied, or a violation), then retries a write that did not apply.
A write whose outcome cannot be learned (the read-back kept failing, or the call ran
out of its deadline and might still apply) makes the ``_id`` *uncertain*: both states
are acceptable at the end and the task never touches it again.

Every error the application saw is counted in ``WorkloadStats.errors`` (by operation
and code); errors outside ``TRANSIENT_CODES`` also land in ``unexpected``; anything
contradicting the model lands in ``violations``. Tests without fault injection assert
``errors`` is empty; chaos tests assert ``unexpected`` and ``violations`` are empty.

``check_invariants`` verifies the end state: a full scan through every router returns
each ``_id`` exactly once with its last written value, counts (router Count and the
per-shard Counts, orphans filtered) match the model, and every router routes each key
to exactly one shard that has the document.

The module also holds the small cluster helpers the migration tests share: a second
router process, an extra shard, balancer/migration polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bson
import grpc

from lauradb.cluster import router_ext_pb2, routing_pb2, routing_pb2_grpc
from lauradb.errors import ErrorCode
from tests.integration.harness import (
    HOST,
    LOG_LEVEL,
    RPC_TIMEOUT,
    Cluster,
    Proc,
    chunks_of,
    count,
    eventually,
    free_port,
    get_shard_map,
    laura_error,
    query,
)

ID_SPACE = 1_000_000
Router = routing_pb2_grpc.RouterServiceStub
Config = routing_pb2_grpc.ConfigServiceStub
Doc = dict[str, Any]

# Codes an application may see while a process is being killed/restarted.
TRANSIENT_CODES = frozenset(
    {
        ErrorCode.SHARD_UNAVAILABLE,
        ErrorCode.HOST_UNREACHABLE,
        ErrorCode.STALE_CONFIG,
        ErrorCode.STALE_EPOCH,
        ErrorCode.EXCEEDED_TIME_LIMIT,
        ErrorCode.MAX_TIME_MS_EXPIRED,
    }
)
TRANSIENT_STATUS = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def brief(doc: object) -> object:
    """A document for messages: the padding shown as its length."""
    if isinstance(doc, dict) and isinstance(doc.get("pad"), str):
        return {**doc, "pad": f"<{len(doc['pad'])} chars>"}
    if isinstance(doc, tuple):
        return tuple(brief(d) for d in doc)
    return doc


class _Uncertain:
    """Marker: a state that could not be learned."""


UNKNOWN = _Uncertain()


@dataclass
class WorkloadStats:
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # "op:CODE" the application saw
    unexpected: list[str] = field(default_factory=list)  # non-transient errors
    violations: list[str] = field(default_factory=list)  # model contradictions
    read_backs: int = 0
    retries: int = 0
    uncertain: int = 0
    gave_up: int = 0

    def summary(self) -> str:
        return (
            f"ops={dict(self.ops)} errors={dict(self.errors)} retries={self.retries} "
            f"read_backs={self.read_backs} uncertain={self.uncertain} gave_up={self.gave_up} "
            f"unexpected={self.unexpected[:5]} violations={self.violations[:5]}"
        )


@dataclass
class _Task:
    index: int
    rng: random.Random
    docs: dict[int, Doc | None] = field(default_factory=dict)  # id -> expected (None: deleted)
    live: list[int] = field(default_factory=list)
    uncertain: dict[int, tuple[Doc | None, Doc | None]] = field(default_factory=dict)
    seq: int = 0
    turn: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def new_id(self) -> int:
        while True:
            doc_id = self.index * ID_SPACE + self.rng.randrange(ID_SPACE)
            if doc_id not in self.docs and doc_id not in self.uncertain:
                return doc_id

    def set_state(self, doc_id: int, doc: Doc | None) -> None:
        was_live = self.docs.get(doc_id) is not None
        self.docs[doc_id] = doc
        if doc is not None and not was_live:
            self.live.append(doc_id)
        elif doc is None and was_live:
            self.live.remove(doc_id)

    def make_uncertain(self, doc_id: int, before: Doc | None, after: Doc | None) -> None:
        self.set_state(doc_id, None)
        del self.docs[doc_id]
        self.uncertain[doc_id] = (before, after)


class _CallFailed(Exception):
    """A write the router answered with an error (status or per-document error)."""

    def __init__(self, code: str, transient: bool, message: str, deadline: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.transient = transient
        self.deadline = deadline


def _transient_code(code: int) -> bool:
    try:
        return ErrorCode(code) in TRANSIENT_CODES
    except ValueError:
        return False


def _classify(exc: grpc.RpcError) -> _CallFailed:
    err = laura_error(exc)
    status = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    transient = status in TRANSIENT_STATUS or err.code in TRANSIENT_CODES
    deadline = status == grpc.StatusCode.DEADLINE_EXCEEDED
    return _CallFailed(err.code_name, transient, err.message, deadline)


class CrudWorkload:
    """Client tasks writing and reading their own documents; see the module docstring."""

    def __init__(
        self,
        routers: Sequence[Router],
        db: str,
        coll: str,
        *,
        tasks: int = 4,
        pad: int = 200,
        seed: int = 0,
        op_timeout: float = 30.0,
        read_back_timeout: float = 45.0,
        think: float = 0.002,
    ) -> None:
        assert routers, "at least one router"
        self.routers = list(routers)
        self.db = db
        self.coll = coll
        self.pad = "x" * pad
        self.op_timeout = op_timeout
        self.read_back_timeout = read_back_timeout
        self.think = think
        self.stats = WorkloadStats()
        self.tasks = [_Task(t, random.Random(seed * 7919 + t)) for t in range(tasks)]
        self._stop = asyncio.Event()
        self._running: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ documents

    def _doc(self, task: _Task, doc_id: int, seq: int) -> Doc:
        return {"_id": doc_id, "k": doc_id, "t": task.index, "seq": seq, "v": seq, "n": 0,
                "pad": self.pad}  # fmt: skip

    def _router(self, task: _Task) -> Router:
        task.turn += 1
        return self.routers[task.turn % len(self.routers)]

    def expected_live(self) -> dict[int, Doc]:
        """Every certainly-live document by ``_id``."""
        return {i: d for t in self.tasks for i, d in t.docs.items() if d is not None}

    def uncertain(self) -> dict[int, tuple[Doc | None, Doc | None]]:
        return {i: s for t in self.tasks for i, s in t.uncertain.items()}

    # ------------------------------------------------------------------ loading

    async def preload(self, per_task: int, *, batch: int = 200) -> None:
        """Insert ``per_task`` documents for every task (bulk, through the routers)."""
        for task in self.tasks:
            docs = [self._doc(task, task.new_id(), task.next_seq()) for _ in range(per_task)]
            for start in range(0, len(docs), batch):
                chunk = docs[start : start + batch]
                for doc in chunk:
                    task.set_state(doc["_id"], doc)  # reserve the ids before the call
                request = routing_pb2.InsertRequest(
                    database=self.db,
                    collection=self.coll,
                    documents=[bson.encode(d) for d in chunk],
                    ordered=False,
                )
                response = await self._router(task).Insert(request, timeout=RPC_TIMEOUT)
                assert response.inserted_count == len(chunk) and not response.errors, (
                    f"preload: {response.inserted_count}/{len(chunk)} inserted, "
                    f"{[(e.code_name, e.error) for e in response.errors[:3]]}"
                )

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        """Start the client tasks (they run until ``stop``)."""
        assert not self._running, "already running"
        self._stop.clear()
        self._running = [asyncio.create_task(self._loop(t)) for t in self.tasks]

    async def stop(self, timeout: float = 90.0) -> WorkloadStats:
        """Ask the tasks to finish their current operation; wait for them."""
        self._stop.set()
        running, self._running = self._running, []
        if running:
            done, pending = await asyncio.wait(running, timeout=timeout)
            for t in pending:
                t.cancel()
            assert not pending, f"{len(pending)} workload tasks did not stop within {timeout}s"
            for t in done:
                t.result()  # re-raise a crash of the workload itself
        return self.stats

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._running)

    async def _loop(self, task: _Task) -> None:
        while not self._stop.is_set():
            roll = task.rng.random()
            if len(task.live) < 5 or roll < 0.30:
                await self._insert(task)
            elif roll < 0.65:
                await self._update(task, task.rng.choice(task.live))
            elif roll < 0.75:
                await self._delete(task, task.rng.choice(task.live))
            else:
                await self._read(task, task.rng.choice(task.live))
            if self.think:
                await asyncio.sleep(self.think)

    # ------------------------------------------------------------------ operations

    async def _insert(self, task: _Task) -> None:
        doc_id = task.new_id()
        doc = self._doc(task, doc_id, task.next_seq())

        async def call(router: Router) -> None:
            request = routing_pb2.InsertRequest(
                database=self.db, collection=self.coll, documents=[bson.encode(doc)], ordered=True
            )
            response = await router.Insert(request, timeout=self.op_timeout)
            if response.errors:
                e = response.errors[0]
                raise _CallFailed(e.code_name, _transient_code(e.code), e.error)
            if response.inserted_count != 1:
                self._violate(task, doc_id, f"insert answered inserted_count={response.inserted_count}")

        await self._write(task, "insert", doc_id, call, None, doc)

    async def _update(self, task: _Task, doc_id: int) -> None:
        before = task.docs[doc_id]
        assert before is not None
        seq = task.next_seq()
        value = task.rng.randrange(1 << 30)
        after = {**before, "seq": seq, "v": value, "n": before["n"] + 1}

        async def call(router: Router) -> None:
            request = routing_pb2.UpdateRequest(
                database=self.db,
                collection=self.coll,
                query=bson.encode({"_id": doc_id, "k": doc_id}),
                update=bson.encode({"$set": {"seq": seq, "v": value}, "$inc": {"n": 1}}),
            )
            response = await router.Update(request, timeout=self.op_timeout)
            if response.matched_count != 1 or response.modified_count != 1:
                self._violate(
                    task, doc_id,
                    f"update answered matched={response.matched_count} "
                    f"modified={response.modified_count} (the model has the document)",
                )  # fmt: skip

        await self._write(task, "update", doc_id, call, before, after)

    async def _delete(self, task: _Task, doc_id: int) -> None:
        before = task.docs[doc_id]

        async def call(router: Router) -> None:
            request = routing_pb2.DeleteRequest(
                database=self.db, collection=self.coll,
                query=bson.encode({"_id": doc_id, "k": doc_id}),
            )  # fmt: skip
            response = await router.Delete(request, timeout=self.op_timeout)
            if response.deleted_count != 1:
                self._violate(
                    task, doc_id, f"delete answered deleted_count={response.deleted_count}"
                )

        await self._write(task, "delete", doc_id, call, before, None)

    async def _read(self, task: _Task, doc_id: int) -> None:
        try:
            found = await self._find(self._router(task), doc_id, check_routing=True, task=task)
        except grpc.RpcError as exc:
            self._record_error(task, "read", _classify(exc))
            return
        self.stats.ops["read"] += 1
        expected = task.docs.get(doc_id)
        if found != expected:
            self._violate(task, doc_id, f"read {brief(found)!r}, model {brief(expected)!r}")

    async def _find(
        self, router: Router, doc_id: int, *, check_routing: bool = False, task: _Task | None = None
    ) -> Doc | None:
        result = await query(
            router, self.db, self.coll, {"_id": doc_id, "k": doc_id}, timeout=self.op_timeout
        )
        if len(result.docs) > 1 and task is not None:
            self._violate(task, doc_id, f"{len(result.docs)} documents for one _id")
        if check_routing and task is not None and len(result.shards_queried) != 1:
            self._violate(task, doc_id, f"equality read queried {sorted(result.shards_queried)}")
        return result.docs[0] if result.docs else None

    async def _write(
        self,
        task: _Task,
        kind: str,
        doc_id: int,
        call: Callable[[Router], Awaitable[None]],
        before: Doc | None,
        after: Doc | None,
    ) -> None:
        deadline = time.monotonic() + self.read_back_timeout
        while True:
            try:
                try:
                    await call(self._router(task))
                except grpc.RpcError as exc:
                    raise _classify(exc) from exc
            except _CallFailed as failed:
                self._record_error(task, kind, failed)
                state = await self._read_back(task, doc_id)
                if isinstance(state, _Uncertain) or (failed.deadline and state == before):
                    # unknown, or a call that timed out and might still apply later
                    task.make_uncertain(doc_id, before, after)
                    self.stats.uncertain += 1
                    return
                if state == after:
                    break  # it applied
                if state != before:
                    self._violate(
                        task, doc_id,
                        f"{kind} failed ({failed}); read back {brief(state)!r}, "
                        f"expected {brief(before)!r} or {brief(after)!r}",
                    )  # fmt: skip
                    task.make_uncertain(doc_id, before, after)
                    return
                if time.monotonic() > deadline or self._stop.is_set():
                    self.stats.gave_up += 1
                    if before is None:
                        task.docs.pop(doc_id, None)  # the insert never happened
                    return
                self.stats.retries += 1
                continue
            break
        self.stats.ops[kind] += 1
        task.set_state(doc_id, after)

    async def _read_back(self, task: _Task, doc_id: int) -> Doc | _Uncertain | None:
        """The document as the cluster has it now, retrying until it answers."""
        self.stats.read_backs += 1
        deadline = time.monotonic() + self.read_back_timeout
        while True:
            try:
                return await self._find(self._router(task), doc_id, task=task)
            except grpc.RpcError as exc:
                self._record_error(task, "read_back", _classify(exc))
            if time.monotonic() > deadline:
                return UNKNOWN
            await asyncio.sleep(0.1)  # retry backoff while a process restarts

    # ------------------------------------------------------------------ bookkeeping

    def _record_error(self, task: _Task, kind: str, failed: _CallFailed) -> None:
        self.stats.errors[f"{kind}:{failed.code}"] += 1
        if not failed.transient:
            self.stats.unexpected.append(f"task {task.index} {kind}: {failed}")

    def _violate(self, task: _Task, doc_id: int, message: str) -> None:
        self.stats.violations.append(f"task {task.index} _id {doc_id}: {message}")

    # ------------------------------------------------------------------ invariants

    async def check_invariants(
        self,
        cluster: Cluster,
        routers: Sequence[Router] | None = None,
        *,
        per_shard: bool = True,
        per_key: bool = True,
    ) -> dict[int, Doc]:
        """Assert the end state matches the model (see the module docstring).

        ``per_shard`` needs a quiet cluster (no migration committing meanwhile): the
        per-shard Counts are taken one after the other. Returns the scanned documents.
        """
        assert not self.running, "stop the workload first"
        routers = list(routers or self.routers)
        problems: list[str] = []
        expected = self.expected_live()
        uncertain = self.uncertain()
        scanned: dict[int, Doc] = {}
        for n, router in enumerate(routers):
            docs = (await query(router, self.db, self.coll, {}, batch_size=500, timeout=60)).docs
            ids = Counter(d["_id"] for d in docs)
            dups = sorted(i for i, c in ids.items() if c > 1)
            if dups:
                problems.append(f"router {n}: {len(dups)} _ids returned twice, e.g. {dups[:5]}")
            scanned = {d["_id"]: d for d in docs}
            problems += self._compare(f"router {n} scan", scanned, expected, uncertain)
        resolved = {i for i in uncertain if i in scanned}
        total = len(expected) + len(resolved)
        for n, router in enumerate(routers):
            counted = await count(router, self.db, self.coll, {}, timeout=60)
            if counted != total:
                problems.append(f"router {n}: Count {counted}, model {total}")
        if per_shard:
            per = [
                await cluster.shard_count(i, self.db, self.coll, {})
                for i in range(len(cluster.shards))
            ]
            if sum(per) != total:
                problems.append(f"per-shard counts {per} (sum {sum(per)}), model {total}")
        if per_key:
            problems += await self._check_routing(routers, [*expected, *uncertain], scanned)
        assert not problems, (
            f"{len(problems)} invariant violations:\n" + "\n".join(problems[:30])
            + f"\nworkload: {self.stats.summary()}"
        )  # fmt: skip
        return scanned

    def _compare(
        self,
        what: str,
        actual: Mapping[int, Doc],
        expected: Mapping[int, Doc],
        uncertain: Mapping[int, tuple[Doc | None, Doc | None]],
    ) -> list[str]:
        problems = []
        missing = [i for i in expected if i not in actual]
        if missing:
            problems.append(f"{what}: {len(missing)} documents missing, e.g. {missing[:5]}")
        wrong = [i for i, d in expected.items() if i in actual and actual[i] != d]
        for i in wrong[:5]:
            problems.append(
                f"{what}: _id {i} is {brief(actual[i])!r}, model {brief(expected[i])!r}"
            )
        if len(wrong) > 5:
            problems.append(f"{what}: {len(wrong)} documents with a wrong value")
        extra = [i for i in actual if i not in expected and i not in uncertain]
        if extra:
            problems.append(f"{what}: {len(extra)} unexpected documents, e.g. {extra[:5]}")
        for i, states in uncertain.items():
            if actual.get(i) not in states:
                problems.append(
                    f"{what}: uncertain _id {i} is {brief(actual.get(i))!r}, "
                    f"not one of {brief(states)!r}"
                )
        return problems

    async def _check_routing(
        self, routers: Sequence[Router], ids: Sequence[int], scanned: Mapping[int, Doc]
    ) -> list[str]:
        """Each router targets exactly one shard for each key, and finds the document."""
        problems: list[str] = []
        limit = asyncio.Semaphore(16)

        async def one(n: int, router: Router, doc_id: int) -> None:
            async with limit:
                result = await query(
                    router, self.db, self.coll, {"k": doc_id}, timeout=self.op_timeout
                )
            if len(result.shards_queried) != 1:
                problems.append(f"router {n}: k={doc_id} queried {sorted(result.shards_queried)}")
            found = [d["_id"] for d in result.docs]
            want = [doc_id] if doc_id in scanned else []
            if found != want:
                problems.append(f"router {n}: k={doc_id} found {found}, scan has {want}")

        await asyncio.gather(
            *(one(n, r, i) for n, r in enumerate(routers) for i in ids)
        )
        return problems


# ====================================================================== cluster helpers


def router_stub(cluster: Cluster, proc: Proc) -> Router:
    return routing_pb2_grpc.RouterServiceStub(cluster.channel(proc.address))


@contextlib.asynccontextmanager
async def extra_router(cluster: Cluster, name: str = "router2") -> AsyncIterator[Proc]:
    """A second router process on the cluster's config server, stopped on exit."""
    address = f"{HOST}:{free_port()}"
    host, port = address.rsplit(":", 1)
    args = ["--host", host, "--port", port, "--log-level", LOG_LEVEL,
            "--config", cluster.config_address]  # fmt: skip
    proc = Proc(name, "router", args, address=address, data_dir=None,
                log_path=cluster.base_dir / f"{name}.log")  # fmt: skip
    proc.start()
    try:
        await proc.wait_healthy()
        yield proc
    finally:
        await asyncio.to_thread(proc.terminate, check=False)
        proc.forget()


async def add_shard(cluster: Cluster, extra_args: Sequence[str] = ()) -> Proc:
    """Start one more shard (``shardN``), AddShard it, and append it to ``cluster.shards``
    (so the cluster's stop and ``shard_stub(i)``/``shard_count(i)`` cover it)."""
    name = f"shard{len(cluster.shards)}"
    address = f"{HOST}:{free_port()}"
    host, port = address.rsplit(":", 1)
    data_dir = cluster.base_dir / name
    args = ["--host", host, "--port", port, "--log-level", LOG_LEVEL, "--data-dir", str(data_dir),
            "--shard-id", name, "--config", cluster.config_address, *extra_args]  # fmt: skip
    proc = Proc(name, "shard_stub", args, address=address, data_dir=data_dir,
                log_path=cluster.base_dir / f"{name}.log")  # fmt: skip
    cluster.shards.append(proc)
    proc.start()
    await proc.wait_healthy()
    request = routing_pb2.AddShardRequest(shard_id=name, host=host, port=int(port))
    await cluster.config_server_stub().AddShard(request, timeout=RPC_TIMEOUT)
    return proc


async def balancer_status(config: Config) -> router_ext_pb2.GetBalancerStatusResponse:
    response: router_ext_pb2.GetBalancerStatusResponse = await config.GetBalancerStatus(
        router_ext_pb2.GetBalancerStatusRequest(), timeout=RPC_TIMEOUT
    )
    return response


async def list_migrations(
    config: Config, *, active_only: bool = False
) -> list[router_ext_pb2.MigrationInfo]:
    request = router_ext_pb2.ListMigrationsRequest(active_only=active_only, limit=100_000)
    response = await config.ListMigrations(request, timeout=RPC_TIMEOUT)
    return list(response.migrations)


async def committed_migrations(config: Config, namespace: str | None = None) -> int:
    """Committed migrations (persisted rows; of ``namespace`` if given)."""
    rows = await list_migrations(config)
    return sum(
        1 for m in rows if m.state == "committed" and (namespace is None or m.namespace == namespace)
    )


async def set_balancer(config: Config, enabled: bool) -> None:
    request = router_ext_pb2.SetBalancerStateRequest(enabled=enabled)
    await config.SetBalancerState(request, timeout=RPC_TIMEOUT)


async def quiesce_balancer(config: Config, timeout: float = 60.0) -> None:
    """Disable the balancer and wait until no migration is running."""
    await set_balancer(config, False)

    async def idle() -> bool:
        status = await balancer_status(config)
        return not status.in_progress and not await list_migrations(config, active_only=True)

    await eventually(idle, timeout=timeout, interval=0.1, what="no migration in progress")


async def chunk_counts(router: Router | Config, db: str, coll: str) -> dict[str, int]:
    """Chunks per shard (every shard of the map, zeros included)."""
    shard_map = await get_shard_map(router, db, coll)
    counts = {route.shard_id: 0 for route in shard_map.shards}
    for chunk in chunks_of(shard_map):
        counts[chunk.shard] += 1
    return counts


async def wait_until(
    check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """``eventually`` with a default polling interval suited to cluster state."""
    return await eventually(check, timeout=timeout, interval=interval, what=what)
