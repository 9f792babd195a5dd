"""Pure helpers shared by the sync and async clients: options, addresses, BSON in and
out, and the pymongo-style argument forms (sort, projection, index keys)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
import grpc
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument

from lauradb.client.errors import ConfigurationError
from lauradb.rpc.channels import CHANNEL_OPTIONS, TlsSettings, channel_credentials

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "ClientOptions",
    "decode",
    "encode",
    "encode_document_for_insert",
    "encode_filter",
    "gen_index_name",
    "index_list",
    "new_request_id",
    "parse_addresses",
    "projection_doc",
    "sort_list",
    "split_namespace",
]

DEFAULT_PORT = 27017
DEFAULT_TIMEOUT = 30.0
URI_SCHEME = "lauradb://"

ASCENDING = 1
DESCENDING = -1


def new_request_id() -> str:
    """A fresh request id (uuid4 hex): one per logical write, reused by its retry."""
    return uuid.uuid4().hex


# ------------------------------------------------------------------ addresses


def _one_address(text: str) -> str:
    text = text.strip()
    if not text:
        raise ConfigurationError("empty router address")
    if text.startswith("["):  # [v6]:port
        host, _, rest = text.partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        host += "]"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    elif ":" in text:  # a bare IPv6 address
        host, port = f"[{text}]", ""
    else:
        host, port = text, ""
    if not port:
        port = str(DEFAULT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"bad router address {text!r}: expected HOST:PORT")
    return f"{host}:{int(port)}"


def parse_addresses(address: str | Sequence[str] | None) -> list[str]:
    """``"host:port"``, ``"h1:p1,h2:p2"``, ``"lauradb://h1:p1,h2:p2"`` or a list of those;
    the port defaults to 27017; duplicates are dropped (first one kept)."""
    if address is None:
        parts = ["localhost"]
    elif isinstance(address, str):
        text = address[len(URI_SCHEME):] if address.startswith(URI_SCHEME) else address
        text = text.split("/", 1)[0]
        parts = text.split(",")
    else:
        parts = [p for item in address for p in str(item).split(",")]
    out: list[str] = []
    for part in parts:
        addr = _one_address(part)
        if addr not in out:
            out.append(addr)
    if not out:
        raise ConfigurationError("no router address given")
    return out


# ------------------------------------------------------------------ options


@dataclass(frozen=True)
class ClientOptions:
    addresses: tuple[str, ...]
    timeout: float = DEFAULT_TIMEOUT
    retry_writes: bool = True
    retry_reads: bool = True
    codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS
    tls: TlsSettings | None = None
    tls_server_name: str | None = None

    @classmethod
    def build(
        cls,
        address: str | Sequence[str] | None,
        *,
        timeout: float | None,
        retry_writes: bool,
        retry_reads: bool,
        codec_options: CodecOptions[Any] | None,
        document_class: type[Any] | None,
        tz_aware: bool | None,
        tls: bool,
        tls_ca_file: str | None,
        tls_cert_file: str | None,
        tls_key_file: str | None,
        tls_server_name: str | None,
    ) -> ClientOptions:
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")
        codec = codec_options or DEFAULT_CODEC_OPTIONS
        changes: dict[str, Any] = {}
        if document_class is not None:
            changes["document_class"] = document_class
        if tz_aware is not None:
            changes["tz_aware"] = tz_aware
        if changes:
            codec = codec.with_options(**changes)
        tls_settings: TlsSettings | None = None
        if tls or tls_ca_file or tls_cert_file or tls_key_file:
            if bool(tls_cert_file) != bool(tls_key_file):
                raise ConfigurationError("tls_cert_file and tls_key_file go together")
            tls_settings = TlsSettings(cert=tls_cert_file, key=tls_key_file, ca=tls_ca_file)
        elif tls_server_name:
            raise ConfigurationError("tls_server_name needs tls=True")
        return cls(
            addresses=tuple(parse_addresses(address)),
            timeout=float(timeout),
            retry_writes=bool(retry_writes),
            retry_reads=bool(retry_reads),
            codec_options=codec,
            tls=tls_settings,
            tls_server_name=tls_server_name,
        )

    def channel_options(self) -> list[tuple[str, int | str]]:
        opts = list(CHANNEL_OPTIONS)
        if self.tls_server_name:
            opts.append(("grpc.ssl_target_name_override", self.tls_server_name))
        return opts

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (files read now), or None for plaintext."""
        if self.tls is None:
            return None
        try:
            return channel_credentials(self.tls)
        except Exception as exc:  # a LauraError naming the unreadable file
            raise ConfigurationError(str(getattr(exc, "message", exc))) from None


# ------------------------------------------------------------------ BSON in and out


def encode(doc: Any, codec: CodecOptions[Any], what: str = "document") -> bytes:
    """BSON bytes of a mapping (a RawBSONDocument passes through unchanged)."""
    if isinstance(doc, RawBSONDocument):
        return bytes(doc.raw)
    if not isinstance(doc, Mapping):
        raise TypeError(
            f"{what} must be an instance of dict, bson.son.SON, bson.raw_bson.RawBSONDocument, "
            f"or a type that inherits from collections.abc.Mapping, not {type(doc).__name__}"
        )
    return bson.encode(doc, codec_options=codec)


def encode_ordered(doc: Mapping[str, Any], codec: CodecOptions[Any], what: str = "document") -> bytes:
    """BSON bytes keeping the key order as given. ``bson.encode`` moves a top-level
    ``_id`` first (right for documents, wrong for a sort or index key pattern such as
    ``{"n": -1, "_id": 1}``): encode it nested and cut the inner document out."""
    if not isinstance(doc, Mapping):
        raise TypeError(f"{what} must be a mapping, not {type(doc).__name__}")
    outer = bson.encode({"k": doc}, codec_options=codec)
    # int32 length, type 0x03, "k\0", the embedded document, trailing 0x00
    return outer[7:-1]


def encode_filter(filter: Any, codec: CodecOptions[Any], what: str = "filter") -> bytes:
    """A filter (None: match everything)."""
    return encode({} if filter is None else filter, codec, what)


def encode_document_for_insert(doc: Any, codec: CodecOptions[Any]) -> tuple[Any, bytes]:
    """``(_id, bytes)``; an ObjectId ``_id`` is set on the caller's document when it has
    none (as pymongo does). A RawBSONDocument without ``_id`` is sent as is (the router
    then generates one, which the caller cannot see)."""
    if isinstance(doc, RawBSONDocument):
        return doc.get("_id"), bytes(doc.raw)
    if not isinstance(doc, MutableMapping):
        raise TypeError(
            "document must be an instance of dict, bson.son.SON, bson.raw_bson.RawBSONDocument, "
            f"or a type that inherits from collections.abc.MutableMapping, not {type(doc).__name__}"
        )
    if "_id" not in doc:
        doc["_id"] = ObjectId()
    return doc["_id"], bson.encode(doc, codec_options=codec)


def decode(data: bytes, codec: CodecOptions[Any]) -> Any:
    return bson.decode(data, codec_options=codec)


# ------------------------------------------------------------------ argument forms


def split_namespace(ns: str) -> tuple[str, str]:
    db, dot, coll = ns.partition(".")
    if not (db and dot and coll):
        raise ValueError(f"expected a namespace 'db.collection', got {ns!r}")
    return db, coll


def _pair(item: Any, what: str) -> tuple[str, Any]:
    if isinstance(item, str):
        return item, ASCENDING
    if isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str):
        return item[0], item[1]
    raise TypeError(f"{what} must be a key name or a (key, direction) pair, not {item!r}")


def index_list(key_or_list: Any, direction: Any = None, what: str = "keys") -> list[tuple[str, Any]]:
    """pymongo's forms: ``"a"`` (with ``direction``), ``[("a", 1), ("b", -1)]``,
    ``{"a": 1}``, ``["a", "b"]``."""
    if direction is not None:
        if not isinstance(key_or_list, str):
            raise TypeError("a direction is only given with a single key name")
        return [(key_or_list, direction)]
    if isinstance(key_or_list, str):
        return [(key_or_list, ASCENDING)]
    if isinstance(key_or_list, Mapping):
        out = [(str(k), v) for k, v in key_or_list.items()]
    elif isinstance(key_or_list, Iterable):
        out = [_pair(item, what) for item in key_or_list]
    else:
        raise TypeError(f"{what} must be a string, a list of (key, direction) pairs or a mapping")
    if not out:
        raise ValueError(f"{what} cannot be empty")
    return out


def sort_list(key_or_list: Any, direction: Any = None) -> list[tuple[str, Any]]:
    pairs = index_list(key_or_list, direction, "sort")
    for key, value in pairs:
        if isinstance(value, Mapping):
            continue  # {"$meta": ...}
        if value not in (1, -1) or isinstance(value, bool):
            raise ValueError(f"bad sort direction {value!r} for {key!r}: use 1 or -1")
    return pairs


def sort_doc(pairs: Sequence[tuple[str, Any]] | None) -> dict[str, Any] | None:
    return None if not pairs else dict(pairs)


def projection_doc(projection: Any) -> dict[str, Any] | None:
    """None, a mapping, or a list of field names (``["a", "b"]`` -> ``{"a": 1, "b": 1}``);
    an empty projection means the whole document."""
    if projection is None:
        return None
    if isinstance(projection, Mapping):
        return dict(projection) or None
    if isinstance(projection, str) or not isinstance(projection, Iterable):
        raise TypeError("projection must be a mapping or a list of field names")
    fields = list(projection)
    if not all(isinstance(f, str) for f in fields):
        raise TypeError("projection must be a mapping or a list of field names")
    return {f: 1 for f in fields} or {"_id": 1}


def gen_index_name(keys: Sequence[tuple[str, Any]]) -> str:
    """The name MongoDB derives for an index: ``a_1_b_-1``."""
    return "_".join(f"{k}_{v}" for k, v in keys)


def check_int(name: str, value: Any, *, non_negative: bool = True) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if non_negative and value < 0:
        raise ValueError(f"{name} must be >= 0")
    return value
