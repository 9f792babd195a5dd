"""The synchronous client: ``Client``, ``Database``, ``Collection``, ``Admin``.

Each method builds its operation with ``ops`` (shared with the async twin) and runs it
on the blocking transport.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, NoReturn, TypeVar

from bson.codec_options import CodecOptions

from lauradb.client import _common as c
from lauradb.client import ops
from lauradb.client._transport import SyncTransport
from lauradb.client.bulk import WriteOp, bulk_write
from lauradb.client.concern import (
    Concerns,
    HasConcerns,
    apply_concerns,
)
from lauradb.client.cursor import Cursor, CursorCore, FindSpec, aggregate_call, find_call
from lauradb.client.results import (
    BulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)
from lauradb.client.status import ClusterStatus, cluster_status
from lauradb.client.transaction import Transaction

__all__ = ["Admin", "Client", "Collection", "Database"]

T = TypeVar("T")


class Client:
    """A connection to one or more LauraDB routers (pymongo's ``MongoClient``).

    ``Client("localhost:27017")``, ``Client(["r1:27017", "r2:27017"])`` or
    ``Client("lauradb://r1:27017,r2:27017")``. Options: ``timeout`` (seconds per call,
    default 30), ``retry_writes`` / ``retry_reads`` (default True), ``tz_aware``,
    ``document_class`` or ``codec_options`` (as pymongo), and TLS: ``tls=True`` with
    ``tls_ca_file`` (the CA to trust; default: the system's), ``tls_cert_file`` +
    ``tls_key_file`` (a client certificate, for mutual TLS) and ``tls_server_name``.

    ``client.shop`` / ``client["shop"]`` is a database; ``client.admin`` the cluster
    administration (``shard_collection``, ``add_shard``, ``status()``...).
    """

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
            self._options.credentials()  # unreadable files fail here, not on first use
        self._transport = SyncTransport(self._options)

    # ------------------------------------------------------------------ properties

    @property
    def options(self) -> c.ClientOptions:
        return self._options

    @property
    def addresses(self) -> list[str]:
        """Every router this client may use, in order of preference."""
        return list(self._options.addresses)

    @property
    def address(self) -> str:
        """The router operations currently go to (it changes on failover)."""
        return self._transport.routers.current

    @property
    def codec_options(self) -> CodecOptions[Any]:
        return self._options.codec_options

    @property
    def admin(self) -> Admin:
        return Admin(self)

    # ------------------------------------------------------------------ databases

    def get_database(self, name: str) -> Database:
        return Database(self, name)

    def __getitem__(self, name: str) -> Database:
        return Database(self, name)

    def __getattr__(self, name: str) -> Database:
        if name.startswith("_"):
            raise AttributeError(
                f"Client has no attribute {name!r}; to access the {name} database use "
                f"client[{name!r}]"
            )
        return Database(self, name)

    def list_database_names(self) -> list[str]:
        return self._run(ops.list_database_names())

    def drop_database(self, name_or_database: str | Database) -> bool:
        name = name_or_database.name if isinstance(name_or_database, Database) else name_or_database
        return self._run(ops.drop_database(name))

    # ------------------------------------------------------------------ lifecycle

    def transaction(
        self,
        *,
        timeout_ms: int | None = None,
        txn_id: str | None = None,
        retries: int | None = None,
    ) -> Transaction:
        """A transaction block: ``with client.transaction() as tx:`` collects
        ``tx.insert_one(coll, doc)``, ``tx.update_one/update_many/replace_one(coll,
        filter, update, expect_matched=...)``, ``tx.delete_one/delete_many`` and
        ``tx.find(coll, filter)`` (a locking read); leaving the block commits them all
        or none (``tx.result``: one result per operation). ``timeout_ms``: how long
        the transaction may take (default: the router's, 10 s), transient aborts
        being retried meanwhile (at most ``retries`` times when given); ``txn_id``:
        an idempotency key (default: a random one). See ``lauradb.client.transaction``."""
        return Transaction(self, timeout_ms=timeout_ms, txn_id=txn_id, retries=retries)

    def close(self) -> None:
        """Close the channels; the client cannot be used afterwards."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.addresses!r})"

    def _run(self, program: ops.Program[T]) -> T:
        return self._transport.run(program)


class Database:
    """A database (created on first write, as in MongoDB)."""

    def __init__(self, client: Client, name: str) -> None:
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
    def client(self) -> Client:
        return self._client

    def get_collection(self, name: str) -> Collection:
        return Collection(self, name)

    def __getitem__(self, name: str) -> Collection:
        return Collection(self, name)

    def __getattr__(self, name: str) -> Collection:
        if name.startswith("_"):
            raise AttributeError(
                f"Database has no attribute {name!r}; to access the {name} collection use "
                f"database[{name!r}]"
            )
        return Collection(self, name)

    def list_collection_names(self) -> list[str]:
        return [entry["name"] for entry in self.list_collections()]

    def list_collections(self) -> list[dict[str, Any]]:
        """``{"name", "type", "info"}`` per collection (``info``: sharding)."""
        return self._client._run(ops.list_collections(self._name))

    def drop_collection(self, name_or_collection: str | Collection) -> bool:
        name = (
            name_or_collection.name
            if isinstance(name_or_collection, Collection)
            else name_or_collection
        )
        return self._client._run(ops.drop_collection(self._name, name))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Database):
            return NotImplemented
        return self._client is other._client and self._name == other._name

    def __hash__(self) -> int:
        return hash(self._name)

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        method = self._name.rsplit(".", 1)[-1]
        raise TypeError(
            f"'Database' object is not callable. If you meant to call the '{method}' method "
            f"on a 'Database' object it is failing because no such method exists."
        )

    def __repr__(self) -> str:
        return f"Database({self._client!r}, {self._name!r})"


class Collection(HasConcerns):
    """A collection: pymongo's CRUD, indexes, aggregation and bulk writes."""

    def __init__(self, database: Database, name: str) -> None:
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
    def database(self) -> Database:
        return self._database

    def __getitem__(self, name: str) -> Collection:
        return Collection(self._database, f"{self._name}.{name}")

    def __getattr__(self, name: str) -> Collection:
        if name.startswith("_"):
            raise AttributeError(f"Collection has no attribute {name!r}")
        return Collection(self._database, f"{self._name}.{name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Collection):
            return NotImplemented
        return self._database == other._database and self._name == other._name

    def __hash__(self) -> int:
        return hash(self.full_name)

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        method = self._name.rsplit(".", 1)[-1]
        raise TypeError(
            f"'Collection' object is not callable. If you meant to call the '{method}' method "
            f"on a 'Collection' object it is failing because no such method exists."
        )

    def __repr__(self) -> str:
        return f"Collection({self._database!r}, {self._name!r})"

    def _run(self, program: ops.Program[T]) -> T:
        if not self._concerns.default:
            program = apply_concerns(program, self._concerns)
        return self._database.client._run(program)

    def with_options(
        self, *, write_concern: Any = None, read_preference: Any = None,
        read_concern: Any = None, **_ignored: Any,
    ) -> Collection:
        """A copy of this collection with other options (pymongo's ``with_options``)."""
        other = Collection(self._database, self._name)
        other._concerns = self._concerns.replace(write_concern, read_preference, read_concern)
        return other

    @property
    def _transport(self) -> SyncTransport:
        return self._database.client._transport

    # ------------------------------------------------------------------ writes

    def insert_one(self, document: Any) -> InsertOneResult:
        """Insert a document; an ObjectId ``_id`` is added to it when it has none."""
        return self._run(ops.insert_one(self._db, self._name, document, self._codec))

    def insert_many(self, documents: Iterable[Any], ordered: bool = True) -> InsertManyResult:
        """Insert documents (``_id`` added where missing). Per-document failures raise
        BulkWriteError (``ordered``: stop at the first)."""
        return self._run(
            ops.insert_many(self._db, self._name, documents, ordered, self._codec)
        )

    def _update(self, filter: Mapping[str, Any], update: Any, *, multi: bool, upsert: bool,
                replace: bool, array_filters: Sequence[Mapping[str, Any]] | None) -> UpdateResult:
        if not isinstance(filter, Mapping):
            raise TypeError(f"filter must be a mapping, not {type(filter).__name__}")
        return self._run(
            ops.update(self._db, self._name, filter, update, multi=multi, upsert=upsert,
                       replace=replace, array_filters=array_filters, codec=self._codec)
        )

    def update_one(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        upsert: bool = False,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
    ) -> UpdateResult:
        """Update one matching document with ``$`` operators (retried once on failover)."""
        return self._update(filter, update, multi=False, upsert=upsert, replace=False,
                            array_filters=array_filters)

    def update_many(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        upsert: bool = False,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
    ) -> UpdateResult:
        """Update every matching document (not retried, as in MongoDB)."""
        return self._update(filter, update, multi=True, upsert=upsert, replace=False,
                            array_filters=array_filters)

    def replace_one(
        self, filter: Mapping[str, Any], replacement: Mapping[str, Any], upsert: bool = False
    ) -> UpdateResult:
        return self._update(filter, replacement, multi=False, upsert=upsert, replace=True,
                            array_filters=None)

    def delete_one(self, filter: Mapping[str, Any]) -> DeleteResult:
        return self._run(
            ops.delete(self._db, self._name, filter, multi=False, codec=self._codec)
        )

    def delete_many(self, filter: Mapping[str, Any]) -> DeleteResult:
        return self._run(
            ops.delete(self._db, self._name, filter, multi=True, codec=self._codec)
        )

    def bulk_write(self, requests: Iterable[WriteOp], ordered: bool = True) -> BulkWriteResult:
        """``InsertOne``/``UpdateOne``/``UpdateMany``/``ReplaceOne``/``DeleteOne``/
        ``DeleteMany``, in order; failures raise BulkWriteError."""
        return self._run(
            bulk_write(self._db, self._name, requests, ordered, self._codec)
        )

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
    ) -> Cursor:
        """A lazy cursor: nothing is sent until the first document is wanted; batches
        then come with GetMore. ``sort``: ``"a"``, ``[("a", 1), ("b", -1)]`` or a
        mapping; chaining (``.sort().skip().limit()``) works until iteration starts."""
        spec = FindSpec(self._db, self._name, filter, projection, skip, limit, sort, batch_size)
        if not self._concerns.default:
            spec.concerns = self._concerns
        core = CursorCore(find_call(spec, self._codec), self._codec, spec.batch_size, spec.limit)
        return Cursor(self._transport, core, spec)

    def find_one(self, filter: Any = None, projection: Any = None, **kwargs: Any) -> Any:
        """The first matching document, or None. A non-mapping filter means ``{"_id": it}``."""
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        kwargs["limit"] = -1
        with self.find(filter, projection, **kwargs) as cursor:
            for doc in cursor:
                return doc
        return None

    def count_documents(self, filter: Mapping[str, Any], *, skip: int = 0, limit: int = 0) -> int:
        return self._run(
            ops.count_documents(self._db, self._name, filter, skip=skip, limit=limit,
                                codec=self._codec)
        )

    def estimated_document_count(self) -> int:
        return self.count_documents({})

    def distinct(self, key: str, filter: Mapping[str, Any] | None = None) -> list[Any]:
        return self._run(ops.distinct(self._db, self._name, key, filter, self._codec))

    def aggregate(
        self,
        pipeline: Sequence[Mapping[str, Any]],
        *,
        batch_size: int = 0,
        allow_disk_use: bool = False,
        max_memory_bytes: int = 0,
    ) -> Cursor:
        """Run a pipeline; a cursor over its results (the first batch is fetched now, so
        errors raise here, as pymongo's)."""
        call = aggregate_call(self._db, self._name, pipeline, batch_size=batch_size,
                              allow_disk_use=allow_disk_use, max_memory_bytes=max_memory_bytes,
                              codec=self._codec)
        if not self._concerns.default:
            self._concerns.set_on(call.request, "read")
        cursor = Cursor(self._transport, CursorCore(call, self._codec, batch_size))
        cursor._fetch()
        return cursor

    # ------------------------------------------------------------------ indexes and admin

    def create_index(
        self, keys: Any, *, name: str | None = None, unique: bool = False, sparse: bool = False
    ) -> str:
        """Create an index (``"a"``, ``[("a", 1), ("b", -1)]`` or ``{"a": 1}``); its name."""
        return self._run(ops.create_index(self._db, self._name, keys, name=name,
                                                 unique=unique, sparse=sparse, codec=self._codec))

    def drop_index(self, index_or_name: Any) -> None:
        self._run(ops.drop_index(self._db, self._name, index_or_name))

    def drop_indexes(self) -> None:
        """Drop every index but ``_id_``."""
        self._run(ops.drop_index(self._db, self._name, "*"))

    def list_indexes(self) -> list[dict[str, Any]]:
        """``{"v", "key", "name", "unique"?, "sparse"?}`` per index, ``_id_`` first."""
        return self._run(ops.list_indexes(self._db, self._name, self._codec))

    def index_information(self) -> dict[str, dict[str, Any]]:
        """``{name: {"key": [(field, direction)], "unique"?: True, ...}}``."""
        out: dict[str, dict[str, Any]] = {}
        for index in self.list_indexes():
            info = {k: v for k, v in index.items() if k not in ("name", "key")}
            info["key"] = list(index["key"].items())
            out[index["name"]] = info
        return out

    def drop(self) -> bool:
        """Drop the collection (its documents, indexes and sharding)."""
        return self._run(ops.drop_collection(self._db, self._name))


class Admin:
    """Cluster administration through the router (``client.admin``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def shard_collection(
        self,
        namespace: str,
        key: Any,
        *,
        hashed: bool = False,
        unique: bool = False,
        initial_chunks: int = 0,
    ) -> dict[str, Any]:
        """Shard ``"db.coll"`` on ``key``: ``"customer"``, ``["a", "b"]``,
        ``{"customer": "hashed"}`` or ``{"a": 1, "b": 1}``; ``hashed=True`` hashes the
        first field. ``initial_chunks``: hashed keys' pre-split (0: two per shard)."""
        return self._client._run(ops.shard_collection(
            namespace, key, hashed=hashed, unique=unique, initial_chunks=initial_chunks))

    def add_shard(self, shard_id: str, address: str) -> dict[str, Any]:
        return self._client._run(ops.add_shard(shard_id, address))

    def remove_shard(self, shard_id: str) -> dict[str, Any]:
        """Start (or check on) draining a shard: ``state`` started/ongoing/completed."""
        return self._client._run(ops.remove_shard(shard_id))

    def list_shards(self) -> list[dict[str, Any]]:
        return self._client._run(ops.list_shards())

    def start_balancer(self) -> bool:
        return self._client._run(ops.set_balancer_state(True))

    def stop_balancer(self) -> bool:
        return self._client._run(ops.set_balancer_state(False))

    def status(self) -> ClusterStatus:
        """The cluster at a glance (what ``lauradb status`` shows), as data."""
        return self._client._run(cluster_status())
