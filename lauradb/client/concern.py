"""Write concern, read preference and read concern (pymongo's names and spellings).

::

    client = Client("localhost:27017", write_concern=WriteConcern(w="majority", wtimeout=5000),
                    read_preference=ReadPreference.SECONDARY_PREFERRED)
    fast = client.shop.orders.with_options(write_concern=WriteConcern(w=1))
    replicas = client.shop.orders.with_options(read_preference=ReadPreference("secondary"))

Unset: the cluster's defaults (w: "majority", read preference primary, read concern
local). A write whose write concern could not be satisfied (e.g. ``wtimeout``) WAS
applied: ``WriteConcernError`` is raised after it, carrying the result
(``err.details["result"]``) and ``err.details["writeConcernError"]``, as pymongo does.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from lauradb.client.errors import WriteConcernError
from lauradb.cluster import replset_pb2
from lauradb.errors import LauraError
from lauradb.replset.monitor import mode_name, parse_mode

__all__ = [
    "Concerns",
    "HasConcerns",
    "ReadConcern",
    "ReadPreference",
    "WriteConcern",
    "apply_concerns",
]


@dataclass(frozen=True)
class WriteConcern:
    """``w``: "majority" or a member count; ``wtimeout``: milliseconds (0: none)."""

    w: int | str | None = None
    wtimeout: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.w, bool) or not (
            self.w is None or (isinstance(self.w, int) and self.w >= 0) or self.w == "majority"
        ):
            raise ValueError(f'w must be "majority" or a non-negative int, not {self.w!r}')
        if self.wtimeout is not None and (not isinstance(self.wtimeout, int) or self.wtimeout < 0):
            raise ValueError(f"wtimeout must be a non-negative int (ms), not {self.wtimeout!r}")

    @property
    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.w is not None:
            out["w"] = self.w
        if self.wtimeout is not None:
            out["wtimeout"] = self.wtimeout
        return out

    def to_proto(self) -> replset_pb2.WriteConcern:
        return replset_pb2.WriteConcern(
            w="" if self.w is None else str(self.w), wtimeout_ms=self.wtimeout or 0
        )


class ReadPreference:
    """A read preference mode (``"primary"``, ``"primaryPreferred"``, ``"secondary"``,
    ``"secondaryPreferred"``, ``"nearest"``) and ``max_staleness`` in seconds (-1: none,
    pymongo's convention). ``ReadPreference.SECONDARY`` etc. are ready-made."""

    PRIMARY: ClassVar[ReadPreference]
    PRIMARY_PREFERRED: ClassVar[ReadPreference]
    SECONDARY: ClassVar[ReadPreference]
    SECONDARY_PREFERRED: ClassVar[ReadPreference]
    NEAREST: ClassVar[ReadPreference]

    def __init__(self, mode: str = "primary", max_staleness: float = -1) -> None:
        try:
            self.mode = parse_mode(mode)
        except LauraError as exc:
            raise ValueError(exc.message) from None
        if max_staleness != -1 and max_staleness <= 0:
            raise ValueError("max_staleness must be -1 (no limit) or a positive number of seconds")
        if max_staleness != -1 and self.mode == replset_pb2.READ_PRIMARY:
            raise ValueError("max_staleness cannot be used with read preference primary")
        self.max_staleness = max_staleness

    @property
    def name(self) -> str:
        return mode_name(self.mode)

    @property
    def mongos_mode(self) -> str:
        return self.name

    def to_proto(self) -> replset_pb2.ReadPreference:
        ms = 0 if self.max_staleness == -1 else int(self.max_staleness * 1000)
        return replset_pb2.ReadPreference(mode=self.mode, max_staleness_ms=ms)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ReadPreference)
            and (self.mode, self.max_staleness) == (other.mode, other.max_staleness)
        )

    def __hash__(self) -> int:
        return hash((self.mode, self.max_staleness))

    def __repr__(self) -> str:
        extra = f", max_staleness={self.max_staleness}" if self.max_staleness != -1 else ""
        return f"ReadPreference({self.name!r}{extra})"


ReadPreference.PRIMARY = ReadPreference("primary")
ReadPreference.PRIMARY_PREFERRED = ReadPreference("primaryPreferred")
ReadPreference.SECONDARY = ReadPreference("secondary")
ReadPreference.SECONDARY_PREFERRED = ReadPreference("secondaryPreferred")
ReadPreference.NEAREST = ReadPreference("nearest")


@dataclass(frozen=True)
class ReadConcern:
    """``level``: "local" (default) or "majority"."""

    level: str | None = None

    def __post_init__(self) -> None:
        if self.level not in (None, "local", "majority"):
            raise ValueError(f'read concern level must be "local" or "majority", not {self.level!r}')

    def to_proto(self) -> replset_pb2.ReadConcern:
        level = replset_pb2.READ_CONCERN_MAJORITY if self.level == "majority" else replset_pb2.READ_CONCERN_LOCAL
        return replset_pb2.ReadConcern(level=level)


def _write_concern(value: Any) -> WriteConcern | None:
    if value is None or isinstance(value, WriteConcern):
        return value
    if isinstance(value, Mapping):
        return WriteConcern(w=value.get("w"), wtimeout=value.get("wtimeout"))
    raise TypeError(f"write_concern must be a WriteConcern or a mapping, not {type(value).__name__}")


def _read_preference(value: Any) -> ReadPreference | None:
    if value is None or isinstance(value, ReadPreference):
        return value
    if isinstance(value, str):
        return ReadPreference(value)
    raise TypeError(f"read_preference must be a ReadPreference or a mode name, not {type(value).__name__}")


def _read_concern(value: Any) -> ReadConcern | None:
    if value is None or isinstance(value, ReadConcern):
        return value
    if isinstance(value, str):
        return ReadConcern(value)
    raise TypeError(f"read_concern must be a ReadConcern or a level name, not {type(value).__name__}")


@dataclass(frozen=True)
class Concerns:
    """The options of a client / database / collection (None: the cluster's default)."""

    write_concern: WriteConcern | None = None
    read_preference: ReadPreference | None = None
    read_concern: ReadConcern | None = None

    @staticmethod
    def build(write_concern: Any = None, read_preference: Any = None, read_concern: Any = None) -> Concerns:
        return Concerns(
            _write_concern(write_concern), _read_preference(read_preference), _read_concern(read_concern)
        )

    def replace(
        self, write_concern: Any = None, read_preference: Any = None, read_concern: Any = None
    ) -> Concerns:
        """These options, overridden by the ones given (pymongo's ``with_options``)."""
        return Concerns(
            _write_concern(write_concern) or self.write_concern,
            _read_preference(read_preference) or self.read_preference,
            _read_concern(read_concern) or self.read_concern,
        )

    @property
    def default(self) -> bool:
        return self.write_concern is None and self.read_preference is None and self.read_concern is None

    def set_on(self, request: Any, kind: str) -> None:
        """Put the options on a router request that has the fields."""
        if kind == "write":
            if self.write_concern is not None and _has(request, "write_concern"):
                request.write_concern.CopyFrom(self.write_concern.to_proto())
            return
        if self.read_preference is not None and _has(request, "read_preference"):
            request.read_preference.CopyFrom(self.read_preference.to_proto())
        if self.read_concern is not None and _has(request, "read_concern"):
            request.read_concern.CopyFrom(self.read_concern.to_proto())


def _has(request: Any, field: str) -> bool:
    return field in request.DESCRIPTOR.fields_by_name


Program = Generator[Any, Any, Any]


class HasConcerns:
    """The concern properties of a collection (sync and async): what its ``_concerns``
    say, with pymongo's defaults."""

    _concerns: Concerns

    @property
    def write_concern(self) -> WriteConcern | None:
        return self._concerns.write_concern

    @property
    def read_preference(self) -> ReadPreference:
        return self._concerns.read_preference or ReadPreference.PRIMARY

    @property
    def read_concern(self) -> ReadConcern | None:
        return self._concerns.read_concern


def apply_concerns(program: Program, concerns: Concerns) -> Program:
    """``program`` with the options put on each of its requests; raises
    WriteConcernError (after the program's result is known) when a write's reply
    carried ``write_concern_error``."""
    wce: replset_pb2.WriteConcernError | None = None
    try:
        call = next(program)
        while True:
            if not concerns.default and hasattr(call, "request"):  # not a Pause
                concerns.set_on(call.request, call.kind)
            try:
                resp = yield call
            except BaseException as exc:
                call = program.throw(exc)
                continue
            if call.kind == "write" and _has(resp, "write_concern_error") and resp.HasField(
                "write_concern_error"
            ):
                if wce is None or resp.write_concern_error.acknowledged < wce.acknowledged:
                    wce = resp.write_concern_error
            call = program.send(resp)
    except StopIteration as stop:
        result = stop.value
    if wce is not None:
        raise WriteConcernError.of(wce, result)
    return result
