"""LauraDB: the library every process and application shares.

``lauradb.Client`` / ``lauradb.AsyncClient`` are the Python driver (``lauradb.client``),
imported on first use so that the server processes do not load it.
"""

from typing import Any

__all__ = ["AsyncClient", "Client"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lauradb import client

        return getattr(client, name)
    raise AttributeError(f"module 'lauradb' has no attribute {name!r}")
