"""Consistency checks between a replica-set shard's recorded members and what the
members themselves say (``Hello``): at AddShard and whenever a member registers.

A member's ``Hello.members`` is its own address plus its ``--peers``. Peers may be
dialed through another address than the one recorded (a proxy, a NAT, a DNS alias), so
a peer address the record does not list is asked who it is: its ``Hello.address`` (its
own advertised address) must be a recorded member of the same replica set. A peer that
does not answer cannot be checked and is let through (it may just be down); definite
disagreements are BAD_VALUE naming the member, the peer and the recorded members.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc

from lauradb.cluster import replset_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.replset.registry import HelloFn

log = logging.getLogger("lauradb.config.replset")

PEER_HELLO_TIMEOUT_S = 0.5


async def _hello_or_none(
    hello: HelloFn, address: str, timeout: float
) -> replset_pb2.HelloResponse | None:
    try:
        return await hello(address, timeout)
    except (grpc.RpcError, LauraError, TimeoutError) as exc:
        log.debug("Hello to %s failed: %s", address, exc)
        return None


async def check_member_view(
    shard_id: str,
    recorded: Sequence[str],
    member: str,
    view: replset_pb2.HelloResponse,
    hello: HelloFn,
    recorded_as: str = "the config server records",
) -> None:
    """``view`` is ``member``'s Hello: its replica set must have as many members as the
    shard's record, and each of its peers must be a recorded member of the same set."""
    listing = ", ".join(recorded)
    claimed = [m for m in view.members if m]
    if len(claimed) != len(recorded):
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"shard '{shard_id}': member {member} (replica set '{view.replset}') was started "
            f"as one of {len(claimed)} members [{', '.join(claimed)}], but {recorded_as} "
            f"{len(recorded)} members [{listing}]: restart it with --peers listing "
            f"the other recorded members, or AddShard with the right members",
        )
    own = {member, view.address}
    unknown = [m for m in claimed if m not in recorded and m not in own]
    answers = await asyncio.gather(
        *(_hello_or_none(hello, m, PEER_HELLO_TIMEOUT_S) for m in unknown)
    )
    for peer, resp in zip(unknown, answers, strict=True):
        if resp is None:
            continue  # unreachable: cannot tell who it is (it may just be down)
        if resp.replset != view.replset:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"shard '{shard_id}': member {member} lists peer {peer}, which is "
                + (f"in replica set '{resp.replset}'" if resp.replset else "a standalone shard")
                + f", not '{view.replset}' ({recorded_as} [{listing}])",
            )
        if resp.address not in recorded:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"shard '{shard_id}': member {member} lists peer {peer} (node {resp.node_id} "
                f"at {resp.address}), which is not one of the members {recorded_as} "
                f"[{listing}]",
            )


async def check_members_agree(
    shard_id: str, members: Sequence[str], hello: HelloFn, timeout: float = 2.0
) -> None:
    """AddShard: every member's own view of the set agrees with ``members``."""
    views = await asyncio.gather(*(_hello_or_none(hello, m, timeout) for m in members))
    for member, view in zip(members, views, strict=True):
        if view is not None:
            await check_member_view(
                shard_id, members, member, view, hello, recorded_as="AddShard lists"
            )
