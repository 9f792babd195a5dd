"""Result objects, named and shaped like pymongo's (``pymongo.results``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "BulkWriteResult",
    "DeleteResult",
    "InsertManyResult",
    "InsertOneResult",
    "UpdateResult",
]


class _Result:
    __slots__ = ()

    @property
    def acknowledged(self) -> bool:
        """Always True: every write through the router is acknowledged."""
        return True


class InsertOneResult(_Result):
    __slots__ = ("_inserted_id",)

    def __init__(self, inserted_id: Any) -> None:
        self._inserted_id = inserted_id

    @property
    def inserted_id(self) -> Any:
        """The ``_id`` of the inserted document (generated client-side when absent)."""
        return self._inserted_id

    def __repr__(self) -> str:
        return f"InsertOneResult({self._inserted_id!r}, acknowledged=True)"


class InsertManyResult(_Result):
    __slots__ = ("_inserted_ids",)

    def __init__(self, inserted_ids: list[Any]) -> None:
        self._inserted_ids = inserted_ids

    @property
    def inserted_ids(self) -> list[Any]:
        """The ``_id`` of every document, in the order given."""
        return self._inserted_ids

    def __repr__(self) -> str:
        return f"InsertManyResult({self._inserted_ids!r}, acknowledged=True)"


class UpdateResult(_Result):
    __slots__ = ("_raw",)

    def __init__(self, raw_result: Mapping[str, Any]) -> None:
        self._raw = dict(raw_result)

    @property
    def raw_result(self) -> dict[str, Any]:
        """``{"n": matched (+1 when upserted), "nModified": ..., "upserted": id?}``"""
        return self._raw

    @property
    def matched_count(self) -> int:
        if self.upserted_id is not None:
            return 0
        return int(self._raw.get("n", 0))

    @property
    def modified_count(self) -> int:
        return int(self._raw.get("nModified", 0))

    @property
    def upserted_id(self) -> Any:
        return self._raw.get("upserted")

    def __repr__(self) -> str:
        return f"UpdateResult({self._raw!r}, acknowledged=True)"


class DeleteResult(_Result):
    __slots__ = ("_raw",)

    def __init__(self, raw_result: Mapping[str, Any]) -> None:
        self._raw = dict(raw_result)

    @property
    def raw_result(self) -> dict[str, Any]:
        return self._raw

    @property
    def deleted_count(self) -> int:
        return int(self._raw.get("n", 0))

    def __repr__(self) -> str:
        return f"DeleteResult({self._raw!r}, acknowledged=True)"


class BulkWriteResult(_Result):
    __slots__ = ("_raw",)

    def __init__(self, bulk_api_result: Mapping[str, Any]) -> None:
        self._raw = dict(bulk_api_result)

    @property
    def bulk_api_result(self) -> dict[str, Any]:
        """``nInserted``, ``nMatched``, ``nModified``, ``nRemoved``, ``nUpserted``,
        ``upserted`` (``[{"index": i, "_id": id}]``), ``writeErrors`` (empty)."""
        return self._raw

    @property
    def inserted_count(self) -> int:
        return int(self._raw.get("nInserted", 0))

    @property
    def matched_count(self) -> int:
        return int(self._raw.get("nMatched", 0))

    @property
    def modified_count(self) -> int:
        return int(self._raw.get("nModified", 0))

    @property
    def deleted_count(self) -> int:
        return int(self._raw.get("nRemoved", 0))

    @property
    def upserted_count(self) -> int:
        return int(self._raw.get("nUpserted", 0))

    @property
    def upserted_ids(self) -> dict[int, Any]:
        """``{index of the operation: upserted _id}``."""
        return {u["index"]: u["_id"] for u in self._raw.get("upserted", ())}

    def __repr__(self) -> str:
        return f"BulkWriteResult({self._raw!r}, acknowledged=True)"
