"""Replica-set member selection shared by the router and the config server."""

from lauradb.replset.monitor import (
    DEFAULT_BUFFER_WINDOW_S,
    FAILOVER_CODES,
    MemberState,
    ReplicaSetMonitor,
    choose_member,
    elect_primary,
    is_failover_error,
    mode_name,
    parse_mode,
)
from lauradb.replset.registry import ReplicaSets, pool_hello, validate_members

__all__ = [
    "DEFAULT_BUFFER_WINDOW_S",
    "FAILOVER_CODES",
    "MemberState",
    "ReplicaSetMonitor",
    "ReplicaSets",
    "choose_member",
    "elect_primary",
    "is_failover_error",
    "mode_name",
    "parse_mode",
    "pool_hello",
    "validate_members",
]
