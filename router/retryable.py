"""Retryable writes at the router (MongoDB's retryable writes, with the client's
``request_id`` in the role of lsid + txnNumber).

* A write with a non-empty ``request_id`` is retryable: inserts (each document is a
  statement, its id the document's index in the client's request), and single
  (``multi=false``) updates, replacements, upserts and deletes (statement 0). Multi
  updates/deletes are not retryable (as in MongoDB) and run as before. Writes without
  a request id are never recorded.
* The router sends the client's request id to the shards as ``retry_id`` with the
  statement ids and a fingerprint of the request; each shard records the outcome of
  every statement it executes in the same transaction as the write and answers a
  statement it has a record of from the record (``shard_stub/retry_records.py``). The
  shard records are the authority, so a retry through *another* router is still
  applied at most once. ``request_id`` on router->shard messages is only the log
  correlation id (the router's current one, generated when the client sent none).
* ``RetryCache``: the complete outcomes of recent request ids on this router, so a
  retry to the same router is answered at once, and a duplicate arriving while the
  first is still running waits for its outcome instead of running concurrently.
  Failed attempts are not kept (a retry runs again; the shards skip what was applied),
  nor are inserts that reported per-document errors (a retry re-runs the failed
  documents, as MongoDB does).
* A request id reused for a different write (another fingerprint) fails with
  ILLEGAL_OPERATION rather than answering for the other write.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cachetools import TTLCache
from prometheus_client import Counter

from lauradb.cluster import routing_pb2
from lauradb.errors import ErrorCode, LauraError

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_CACHE_TTL_S",
    "MAX_RETRY_ID_CHARS",
    "RetryCache",
    "RetryIdentity",
    "delete_identity",
    "insert_identity",
    "update_identity",
]

R = TypeVar("R")

DEFAULT_CACHE_SIZE = 10_000
DEFAULT_CACHE_TTL_S = 300.0
MAX_RETRY_ID_CHARS = 128  # longer request ids are recorded as a digest

CACHE_ANSWERS = Counter(
    "lauradb_router_retry_cache_answers",
    "Retried writes answered from the router's cache of recent outcomes",
)
CONCURRENT_DUPLICATES = Counter(
    "lauradb_router_retry_concurrent_duplicates",
    "Writes that arrived while the same request id was running and waited for it",
)


@dataclass(frozen=True)
class RetryIdentity:
    """The dedup identity of one client write."""

    retry_id: str
    fingerprint: bytes


def _retry_id(request_id: str) -> str:
    if len(request_id) <= MAX_RETRY_ID_CHARS:
        return request_id
    return "sha:" + hashlib.blake2b(request_id.encode(), digest_size=20).hexdigest()


def _digest(kind: bytes, database: str, collection: str) -> Any:
    h = hashlib.blake2b(digest_size=16)
    h.update(kind)
    for part in (database, collection):
        raw = part.encode()
        h.update(len(raw).to_bytes(4, "little"))
        h.update(raw)
    return h


def _add(h: Any, data: bytes) -> None:
    h.update(len(data).to_bytes(4, "little"))
    h.update(data)


def insert_identity(req: routing_pb2.InsertRequest) -> RetryIdentity | None:
    if not req.request_id:
        return None
    h = _digest(b"insert\x01" if req.ordered else b"insert\x00", req.database, req.collection)
    for doc in req.documents:
        _add(h, doc)
    return RetryIdentity(_retry_id(req.request_id), h.digest())


def update_identity(req: routing_pb2.UpdateRequest) -> RetryIdentity | None:
    if not req.request_id or req.multi:
        return None
    h = _digest(b"update\x01" if req.upsert else b"update\x00", req.database, req.collection)
    _add(h, req.query)
    _add(h, req.update)
    for af in req.array_filters:
        _add(h, af)
    return RetryIdentity(_retry_id(req.request_id), h.digest())


def delete_identity(req: routing_pb2.DeleteRequest) -> RetryIdentity | None:
    if not req.request_id or req.multi:
        return None
    h = _digest(b"delete", req.database, req.collection)
    _add(h, req.query)
    return RetryIdentity(_retry_id(req.request_id), h.digest())


def reused_id_error(retry_id: str) -> LauraError:
    return LauraError(
        ErrorCode.ILLEGAL_OPERATION,
        f"request id {retry_id!r} was already used by a different write; a request id "
        f"identifies one write, and a retry must resend that same write",
        {"request_id": retry_id},
    )


class _Entry:
    __slots__ = ("fingerprint", "outcome")

    def __init__(self, fingerprint: bytes, outcome: asyncio.Future[Any]) -> None:
        self.fingerprint = fingerprint
        # The response, or None when the attempt failed (a waiter then runs its own).
        self.outcome = outcome


class RetryCache:
    """Outcomes of recent retryable writes on this router (bounded, expiring)."""

    def __init__(
        self, maxsize: int = DEFAULT_CACHE_SIZE, ttl_s: float = DEFAULT_CACHE_TTL_S
    ) -> None:
        self._entries: TTLCache[str, _Entry] = TTLCache(maxsize=maxsize, ttl=ttl_s)

    def __len__(self) -> int:
        return len(self._entries)

    async def run(
        self,
        ident: RetryIdentity,
        attempt: Callable[[], Awaitable[R]],
        complete: Callable[[R], bool] = lambda _: True,
    ) -> R:
        """``attempt()``'s response, or the recorded/in-flight outcome of the same write.

        ``complete(response)``: whether the response may answer later retries.
        """
        key = ident.retry_id
        while True:
            entry = self._entries.get(key)
            if entry is None:
                break
            if entry.fingerprint != ident.fingerprint:
                raise reused_id_error(key)
            if entry.outcome.done():
                done: R | None = entry.outcome.result()
                if done is not None:
                    CACHE_ANSWERS.inc()
                    return done
                # a failed attempt whose entry is still here: run our own below
                if self._entries.get(key) is entry:
                    self._entries.pop(key, None)
                break
            CONCURRENT_DUPLICATES.inc()
            waited: R | None = await asyncio.shield(entry.outcome)
            if waited is not None:
                return waited
            # The first attempt failed: look again (someone may have started another).
        mine = _Entry(ident.fingerprint, asyncio.get_running_loop().create_future())
        self._entries[key] = mine
        result: R | None = None
        try:
            result = await attempt()
        finally:
            if result is None or not complete(result):
                if self._entries.get(key) is mine:
                    self._entries.pop(key, None)
            mine.outcome.set_result(result)
        return result
