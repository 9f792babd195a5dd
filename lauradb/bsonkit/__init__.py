"""BSON value order, field paths and order-preserving key encoding."""

from lauradb.bsonkit.order import bson_equal, canonical_rank, compare, sort_key

__all__ = ["bson_equal", "canonical_rank", "compare", "sort_key"]
