"""LauraDB's Python driver, in pymongo's style.

::

    from lauradb.client import Client

    client = Client("localhost:27017")            # or ["r1:27017", "r2:27017"]
    orders = client.shop.orders
    orders.insert_one({"customer": "ada", "total": 42})
    for doc in orders.find({"total": {"$gte": 10}}).sort("total", -1).limit(5):
        print(doc)

``AsyncClient`` is the asyncio twin (``await orders.insert_one(...)``, ``async for``).
Writes carry a request id and are retried once through the next router when a router
becomes unavailable; the cluster answers a repeated request id with its first outcome,
so a retried write never applies twice.

Transactions: ``with client.transaction() as tx: tx.update_one(coll, ...)`` applies a
list of operations on any shards all or nothing (``lauradb.client.transaction``).
"""

from lauradb.client._async import AsyncAdmin, AsyncClient, AsyncCollection, AsyncDatabase
from lauradb.client._common import ASCENDING, DESCENDING, ClientOptions
from lauradb.client._sync import Admin, Client, Collection, Database
from lauradb.client.bulk import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from lauradb.client.concern import ReadConcern, ReadPreference, WriteConcern
from lauradb.client.cursor import AsyncCursor, Cursor
from lauradb.client.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    CursorNotFound,
    DuplicateKeyError,
    ExecutionTimeout,
    InvalidOperation,
    LauraDBError,
    NetworkTimeout,
    OperationFailure,
    ServerUnavailable,
    TransactionAborted,
    WriteConcernError,
    WriteError,
)
from lauradb.client.results import (
    BulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)
from lauradb.client.status import ClusterStatus
from lauradb.client.transaction import AsyncTransaction, Transaction, TransactionResult

__all__ = [
    "ASCENDING",
    "DESCENDING",
    "Admin",
    "AsyncAdmin",
    "AsyncClient",
    "AsyncCollection",
    "AsyncCursor",
    "AsyncDatabase",
    "AsyncTransaction",
    "BulkWriteError",
    "BulkWriteResult",
    "Client",
    "ClientOptions",
    "ClusterStatus",
    "Collection",
    "ConfigurationError",
    "ConnectionFailure",
    "Cursor",
    "CursorNotFound",
    "Database",
    "DeleteMany",
    "DeleteOne",
    "DeleteResult",
    "DuplicateKeyError",
    "ExecutionTimeout",
    "InsertManyResult",
    "InsertOne",
    "InsertOneResult",
    "InvalidOperation",
    "LauraDBError",
    "NetworkTimeout",
    "OperationFailure",
    "ReadConcern",
    "ReadPreference",
    "ReplaceOne",
    "ServerUnavailable",
    "Transaction",
    "TransactionAborted",
    "TransactionResult",
    "UpdateMany",
    "UpdateOne",
    "UpdateResult",
    "WriteConcern",
    "WriteConcernError",
    "WriteError",
]
