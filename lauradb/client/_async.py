"""The asyncio twin: ``AsyncClient``, ``AsyncDatabase``, ``AsyncCollection``,
``AsyncAdmin``, on ``grpc.aio``. Same operations (``ops``), same retry rule
(``_transport``); every method that talks to a router is a coroutine, ``find`` returns
an ``AsyncCursor`` at once (nothing is sent until it is iterated).

An AsyncClient belongs to the event loop it is first used in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import grpc
from bson.codec_options import CodecOptions
from grpc import aio

from lauradb.client import _common as c
from lauradb.client import ops
from lauradb.client._transport import (
    KILL_TIMEOUT,
    RetryState,
    RouterList,
    check_response,
    stub_class,
)
from lauradb.client.bulk import WriteOp, bulk_write
from lauradb.client.concern import (
    Concerns,
    HasConcerns,
    apply_concerns,
)
from lauradb.client.cursor import AsyncCursor, CursorCore, FindSpec, aggregate_call, find_call
from lauradb.client.errors import InvalidOperation, LauraDBError, from_rpc_error
from lauradb.client.results import (
    BulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)
from lauradb.client.status import ClusterStatus, cluster_status
from lauradb.client.transaction import AsyncTransaction
from lauradb.cluster import router_ext_pb2
from lauradb.rpc.channels import make_channel

__all__ = ["AsyncAdmin", "AsyncClient", "AsyncCollection", "AsyncDatabase", "AsyncTransport"]

T = TypeVar("T")


class AsyncTransport:
    """``grpc.aio`` channels (one per router, made on first use in the client's loop)."""

    def __init__(self, options: c.ClientOptions) -> None:
        self.options = options
        self.routers = RouterList(options.addresses)
        self._channels: dict[str, aio.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_kills: list[tuple[str, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None and not self._loop.is_closed():
            raise InvalidOperation("this AsyncClient is bound to another event loop")
        self._loop = loop  # first use, or the old loop is gone (its channels with it)
        self._channels.clear()
        self._stubs.clear()

    def _stub(self, address: str, service: str) -> Any:
        if self._closed:
            raise InvalidOperation("the client is closed")
        self._bind_loop()
        key = (address, service)
        stub = self._stubs.get(key)
        if stub is None:
            channel = self._channels.get(address)
            if channel is None:
                channel = make_channel(address, self.options.tls, self.options.channel_options())
                self._channels[address] = channel
            stub = stub_class(service)(channel)
            self._stubs[key] = stub
        return stub

    async def invoke(self, call: ops.Call) -> Any:
        if self._pending_kills:
            await self._flush_kills()
        state = RetryState(call, self.options)
        address = call.address or self.routers.current
        while True:
            method = getattr(self._stub(address, call.service), call.method)
            try:
                resp = await method(
                    call.request,
                    timeout=self.options.timeout if call.timeout is None else call.timeout,
                )
            except grpc.RpcError as exc:
                err = from_rpc_error(exc, write=call.kind == "write", address=address)
                if not state.should_retry(err):
                    raise err from None
                address = self.routers.failover(address)
                continue
            return check_response(call, resp, address)

    async def run(self, program: ops.Program[T]) -> T:
        try:
            call = next(program)
            while True:
                if isinstance(call, ops.Pause):
                    await asyncio.sleep(max(0.0, call.seconds))
                    call = program.send(None)
                    continue
                try:
                    resp = await self.invoke(call)
                except LauraDBError as err:
                    call = program.throw(err)
                else:
                    call = program.send(resp)
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def kill_cursor(self, address: str, *cursor_ids: str) -> None:
        req = router_ext_pb2.KillCursorsRequest(cursor_ids=list(cursor_ids))
        with contextlib.suppress(grpc.RpcError, LauraDBError):
            await self._stub(address, "router").KillCursors(req, timeout=KILL_TIMEOUT)

    def kill_cursor_later(self, address: str, cursor_id: str) -> None:
        """From ``AsyncCursor.__del__``: a task if we are in the client's loop, else
        remembered and sent before the next call (or on close)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and loop is self._loop and not self._closed:
            task = loop.create_task(self.kill_cursor(address, cursor_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._pending_kills.append((address, cursor_id))

    async def _flush_kills(self) -> None:
        pending, self._pending_kills = self._pending_kills, []
        by_router: dict[str, list[str]] = {}
        for address, cursor_id in pending:
            by_router.setdefault(address, []).append(cursor_id)
        for address, ids in by_router.items():
            await self.kill_cursor(address, *ids)

    async def close(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(Exception):
            if self._pending_kills and self._loop is asyncio.get_running_loop():
                await self._flush_kills()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=KILL_TIMEOUT)
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        self._stubs.clear()
        same_loop = self._loop is asyncio.get_running_loop()
        for channel in channels:
            if same_loop:
                await channel.close(None)


class AsyncClient:
    """The asyncio twin of ``Client`` (same arguments): ``await
    client.shop.orders.insert_one(doc)``, ``async for doc in coll.find(...)``,
    ``async with AsyncClient(...) as client``."""

    def __init__(
        self,
        address: str | Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        retry_writes: bool = True,
        retry_reads: bool = True,
        codec_options: CodecOptions[Any] | None = None,
        document_class: type[Any] | None = None,
        tz_aware: bool | None = None,
        tls: bool = False,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_server_name: str | None = None,
        write_concern: Any = None,
        read_preference: Any = None,
        read_concern: Any = None,
    ) -> None:
        self._concerns = Concerns.build(write_concern, read_preference, read_concern)
        self._options = c.ClientOptions.build(
            address,
            timeout=timeout,
            retry_writes=retry_writes,
            retry_reads=retry_reads,
            codec_options=codec_options,
            document_class=document_class,
            tz_aware=tz_aware,
            tls=tls,
            tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            tls_server_name=tls_server_name,
        )
        if self._options.tls is not None:
            self._options.credentials()
        self._transport = AsyncTransport(self._options)

    @property
    def options(self) -> c.ClientOptions:
        return self._options

    @property
    def addresses(self) -> list[str]:
        return list(self._options.addresses)

    @property
    def address(self) -> str:
        return self._transport.routers.current

    @property
    def codec_options(self) -> CodecOptions[Any]:
        return self._options.codec_options

    @property
    def admin(self) -> AsyncAdmin:
        return AsyncAdmin(self)

    def get_database(self, name: str) -> AsyncDatabase:
        return AsyncDatabase(self, name)

    def __getitem__(self, name: str) -> AsyncDatabase:
        return AsyncDatabase(self, name)

    def __getattr__(self, name: str) -> AsyncDatabase:
        if name.startswith("_"):
            raise AttributeError(
                f"AsyncClient has no attribute {name!r}; to access the {name} database use "
                f"client[{name!r}]"
            )
        return AsyncDatabase(self, name)

    async def list_database_names(self) -> list[str]:
        return await self._run(ops.list_database_names())

    async def drop_database(self, name_or_database: str | AsyncDatabase) -> bool:
        name = (
            name_or_database.name
            if isinstance(name_or_database, AsyncDatabase)
            else name_or_database
        )
        return await self._run(ops.drop_database(name))

    def transaction(
        self,
        *,
        timeout_ms: int | None = None,
        txn_id: str | None = None,
        retries: int | None = None,
    ) -> AsyncTransaction:
        """A transaction block: ``async with client.transaction() as tx:`` collects
        ``tx.insert_one(coll, doc)``, ``tx.update_one/update_many/replace_one(coll,
        filter, update, expect_matched=...)``, ``tx.delete_one/delete_many`` and
        ``tx.find(coll, filter)`` (a locking read); leaving the block commits them all
        or none (``tx.result``: one result per operation). ``timeout_ms``: how long
        the transaction may take (default: the router's, 10 s), transient aborts
        being retried meanwhile (at most ``retries`` times when given); ``txn_id``:
        an idempotency key (default: a random one). See ``lauradb.client.transaction``."""
        return AsyncTransaction(self, timeout_ms=timeout_ms, txn_id=txn_id, retries=retries)

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.addresses!r})"

    async def _run(self, program: ops.Program[T]) -> T:
        return await self._transport.run(program)


class AsyncDatabase:
    def __init__(self, client: AsyncClient, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if not name:
            raise ValueError("database name cannot be empty")
        self._client = client
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def client(self) -> AsyncClient:
        return self._client

    def get_collection(self, name: str) -> AsyncCollection:
        return AsyncCollection(self, name)

    def __getitem__(self, name: str) -> AsyncCollection:
        return AsyncCollection(self, name)

    def __getattr__(self, name: str) -> AsyncCollection:
        if name.startswith("_"):
            raise AttributeError(
                f"AsyncDatabase has no attribute {name!r}; to access the {name} collection "
                f"use database[{name!r}]"
            )
        return AsyncCollection(self, name)

    async def list_collection_names(self) -> list[str]:
        return [entry["name"] for entry in await self.list_collections()]

    async def list_collections(self) -> list[dict[str, Any]]:
        return await self._client._run(ops.list_collections(self._name))

    async def drop_collection(self, name_or_collection: str | AsyncCollection) -> bool:
        name = (
            name_or_collection.name
            if isinstance(name_or_collection, AsyncCollection)
            else name_or_collection
        )
        return await self._client._run(ops.drop_collection(self._name, name))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AsyncDatabase):
            return NotImplemented
        return self._client is other._client and self._name == other._name

    def __hash__(self) -> int:
        return hash(self._name)

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        method = self._name.rsplit(".", 1)[-1]
        raise TypeError(
            f"'AsyncDatabase' object is not callable. If you meant to call the '{method}' method "
            f"on a 'AsyncDatabase' object it is failing because no such method exists."
        )

    def __repr__(self) -> str:
        return f"AsyncDatabase({self._client!r}, {self._name!r})"


class AsyncCollection(HasConcerns):
    def __init__(self, database: AsyncDatabase, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if not name:
            raise ValueError("collection name cannot be empty")
        self._database = database
        self._name = name
        self._db = database.name
        self._codec = database.client.codec_options
        self._concerns: Concerns = database.client._concerns

    @property
    def name(self) -> str:
        return self._name

    @property
    def full_name(self) -> str:
        return f"{self._db}.{self._name}"

    @property
    def database(self) -> AsyncDatabase:
        return self._database

    def __getitem__(self, name: str) -> AsyncCollection:
        return AsyncCollection(self._database, f"{self._name}.{name}")

    def __getattr__(self, name: str) -> AsyncCollection:
        if name.startswith("_"):
            raise AttributeError(f"AsyncCollection has no attribute {name!r}")
        return AsyncCollection(self._database, f"{self._name}.{name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AsyncCollection):
            return NotImplemented
        return self._database == other._database and self._name == other._name

    def __hash__(self) -> int:
        return hash(self.full_name)

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        method = self._name.rsplit(".", 1)[-1]
        raise TypeError(
            f"'AsyncCollection' object is not callable. If you meant to call the '{method}' method "
            f"on a 'AsyncCollection' object it is failing because no such method exists."
        )

    def __repr__(self) -> str:
        return f"AsyncCollection({self._database!r}, {self._name!r})"

    async def _run(self, program: ops.Program[T]) -> T:
        if not self._concerns.default:
            program = apply_concerns(program, self._concerns)
        return await self._database.client._run(program)

    def with_options(
        self, *, write_concern: Any = None, read_preference: Any = None,
        read_concern: Any = None, **_ignored: Any,
    ) -> AsyncCollection:
        """A copy of this collection with other options (pymongo's ``with_options``)."""
        other = AsyncCollection(self._database, self._name)
        other._concerns = self._concerns.replace(write_concern, read_preference, read_concern)
        return other

    @property
    def _transport(self) -> AsyncTransport:
        return self._database.client._transport

    # ------------------------------------------------------------------ writes

    async def insert_one(self, document: Any) -> InsertOneResult:
        return await self._run(ops.insert_one(self._db, self._name, document, self._codec))

    async def insert_many(self, documents: Iterable[Any], ordered: bool = True) -> InsertManyResult:
        return await self._run(
            ops.insert_many(self._db, self._name, documents, ordered, self._codec)
        )

    async def _update(self, filter: Mapping[str, Any], update: Any, *, multi: bool, upsert: bool,
                      replace: bool,
                      array_filters: Sequence[Mapping[str, Any]] | None) -> UpdateResult:
        if not isinstance(filter, Mapping):
            raise TypeError(f"filter must be a mapping, not {type(filter).__name__}")
        return await self._run(
            ops.update(self._db, self._name, filter, update, multi=multi, upsert=upsert,
                       replace=replace, array_filters=array_filters, codec=self._codec)
        )

    async def update_one(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        upsert: bool = False,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
    ) -> UpdateResult:
        return await self._update(filter, update, multi=False, upsert=upsert, replace=False,
                                  array_filters=array_filters)

    async def update_many(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        upsert: bool = False,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
    ) -> UpdateResult:
        return await self._update(filter, update, multi=True, upsert=upsert, replace=False,
                                  array_filters=array_filters)

    async def replace_one(
        self, filter: Mapping[str, Any], replacement: Mapping[str, Any], upsert: bool = False
    ) -> UpdateResult:
        return await self._update(filter, replacement, multi=False, upsert=upsert, replace=True,
                                  array_filters=None)

    async def delete_one(self, filter: Mapping[str, Any]) -> DeleteResult:
        return await self._run(
            ops.delete(self._db, self._name, filter, multi=False, codec=self._codec)
        )

    async def delete_many(self, filter: Mapping[str, Any]) -> DeleteResult:
        return await self._run(
            ops.delete(self._db, self._name, filter, multi=True, codec=self._codec)
        )

    async def bulk_write(self, requests: Iterable[WriteOp], ordered: bool = True) -> BulkWriteResult:
        return await self._run(bulk_write(self._db, self._name, requests, ordered, self._codec))

    # ------------------------------------------------------------------ reads

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | Iterable[str] | None = None,
        *,
        skip: int = 0,
        limit: int = 0,
        sort: Any = None,
        batch_size: int = 0,
    ) -> AsyncCursor:
        spec = FindSpec(self._db, self._name, filter, projection, skip, limit, sort, batch_size)
        if not self._concerns.default:
            spec.concerns = self._concerns
        core = CursorCore(find_call(spec, self._codec), self._codec, spec.batch_size, spec.limit)
        return AsyncCursor(self._transport, core, spec)

    async def find_one(self, filter: Any = None, projection: Any = None, **kwargs: Any) -> Any:
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        kwargs["limit"] = -1
        async with self.find(filter, projection, **kwargs) as cursor:
            async for doc in cursor:
                return doc
        return None

    async def count_documents(
        self, filter: Mapping[str, Any], *, skip: int = 0, limit: int = 0
    ) -> int:
        return await self._run(
            ops.count_documents(self._db, self._name, filter, skip=skip, limit=limit,
                                codec=self._codec)
        )

    async def estimated_document_count(self) -> int:
        return await self.count_documents({})

    async def distinct(self, key: str, filter: Mapping[str, Any] | None = None) -> list[Any]:
        return await self._run(ops.distinct(self._db, self._name, key, filter, self._codec))

    async def aggregate(
        self,
        pipeline: Sequence[Mapping[str, Any]],
        *,
        batch_size: int = 0,
        allow_disk_use: bool = False,
        max_memory_bytes: int = 0,
    ) -> AsyncCursor:
        call = aggregate_call(self._db, self._name, pipeline, batch_size=batch_size,
                              allow_disk_use=allow_disk_use, max_memory_bytes=max_memory_bytes,
                              codec=self._codec)
        if not self._concerns.default:
            self._concerns.set_on(call.request, "read")
        cursor = AsyncCursor(self._transport, CursorCore(call, self._codec, batch_size))
        await cursor._fetch()
        return cursor

    # ------------------------------------------------------------------ indexes and admin

    async def create_index(
        self, keys: Any, *, name: str | None = None, unique: bool = False, sparse: bool = False
    ) -> str:
        return await self._run(ops.create_index(self._db, self._name, keys, name=name,
                                                unique=unique, sparse=sparse, codec=self._codec))

    async def drop_index(self, index_or_name: Any) -> None:
        await self._run(ops.drop_index(self._db, self._name, index_or_name))

    async def drop_indexes(self) -> None:
        await self._run(ops.drop_index(self._db, self._name, "*"))

    async def list_indexes(self) -> list[dict[str, Any]]:
        return await self._run(ops.list_indexes(self._db, self._name, self._codec))

    async def index_information(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for index in await self.list_indexes():
            info = {k: v for k, v in index.items() if k not in ("name", "key")}
            info["key"] = list(index["key"].items())
            out[index["name"]] = info
        return out

    async def drop(self) -> bool:
        return await self._run(ops.drop_collection(self._db, self._name))


class AsyncAdmin:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def shard_collection(
        self,
        namespace: str,
        key: Any,
        *,
        hashed: bool = False,
        unique: bool = False,
        initial_chunks: int = 0,
    ) -> dict[str, Any]:
        return await self._client._run(ops.shard_collection(
            namespace, key, hashed=hashed, unique=unique, initial_chunks=initial_chunks))

    async def add_shard(self, shard_id: str, address: str) -> dict[str, Any]:
        return await self._client._run(ops.add_shard(shard_id, address))

    async def remove_shard(self, shard_id: str) -> dict[str, Any]:
        return await self._client._run(ops.remove_shard(shard_id))

    async def list_shards(self) -> list[dict[str, Any]]:
        return await self._client._run(ops.list_shards())

    async def start_balancer(self) -> bool:
        return await self._client._run(ops.set_balancer_state(True))

    async def stop_balancer(self) -> bool:
        return await self._client._run(ops.set_balancer_state(False))

    async def status(self) -> ClusterStatus:
        return await self._client._run(cluster_status())
