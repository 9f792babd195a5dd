"""Stable 64-bit hashing of BSON values for hashed shard keys.

``hash_value(v)`` is the first 8 bytes (little-endian, signed) of the MD5 of
``keys.encode_value(v)``. It depends only on the value, never on the process, the
platform or ``PYTHONHASHSEED``, so routers, shards and the config server agree
forever. Because values equal under the BSON comparator encode identically, they
hash identically: ``hash_value(1) == hash_value(1.0) == hash_value(Int64(1))``.

(MongoDB's own hashed index truncates doubles to integers before hashing; LauraDB
hashes the exact value instead, which keeps "equal values hash equally" exact.)

Embedded documents and arrays are hashable here, but MongoDB does not allow arrays
in shard key fields; ``shard_key.ShardKeyPattern`` rejects them before hashing.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from lauradb.bsonkit.keys import encode_value

__all__ = ["hash_encoded", "hash_value", "md5"]


try:  # CPython's own MD5 (no OpenSSL EVP lookup per call: ~2x faster on 8 bytes)
    from _md5 import md5
except ImportError:  # pragma: no cover - a build without it
    md5 = functools.partial(hashlib.md5, usedforsecurity=False)


def hash_encoded(encoded: bytes) -> int:
    """The signed 64-bit hash of an already encoded value."""
    return int.from_bytes(md5(encoded).digest()[:8], "little", signed=True)


def hash_value(v: Any) -> int:
    """A stable signed 64-bit hash of the BSON value ``v``."""
    return hash_encoded(encode_value(v))
