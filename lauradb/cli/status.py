"""``lauradb status``: the cluster at a glance, in the spirit of ``sh.status()``.

Shown: every shard (address, active/draining, chunks it owns over all sharded
collections), the balancer and running migrations, and per database its primary and
collections: total document count (Count through the router), and for sharded ones the
key, strategy and chunks per shard as a bar. Per-shard document counts are not shown.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lauradb.cli.client import Client
from lauradb.cli.render import bar, key_pattern, table
from lauradb.cluster import router_ext_pb2 as ext
from lauradb.cluster import routing_pb2 as r
from lauradb.errors import LauraError


@dataclass
class CollectionStatus:
    name: str
    documents: str
    sharded: bool = False
    key: str = ""
    strategy: str = ""
    chunks: Counter[str] = field(default_factory=Counter)


_STRATEGY_NAMES: dict[int, str] = {r.HASH: "hashed", r.RANGE: "range", r.COMPOUND: "compound"}


def _strategy_name(strategy: int) -> str:
    return _STRATEGY_NAMES.get(strategy, "?")


def _documents(client: Client, db: str, coll: str) -> str:
    try:
        resp = client.call(client.router.Count, ext.CountRequest(database=db, collection=coll))
    except LauraError as exc:
        return f"? ({exc.code_name})"
    return str(resp.count)


def _collection_names(client: Client, info: ext.DatabaseInfo) -> list[str]:
    names = set(info.collections) | set(info.sharded_collections)
    try:
        resp = client.call(client.router.ListCollections, ext.ListCollectionsRequest(
            database=info.name))
        names |= {c.name for c in resp.collections}
    except LauraError:
        pass  # the config server's view is enough
    return sorted(names)


def collection_status(client: Client, db: str, coll: str, sharded: bool) -> CollectionStatus:
    status = CollectionStatus(coll, _documents(client, db, coll))
    if not sharded:
        return status
    shard_map = client.call(client.config.GetShardMap, r.GetShardMapRequest(
        database=db, collection=coll))
    if not shard_map.sharded:
        return status
    status.sharded = True
    status.strategy = _strategy_name(shard_map.strategy)
    fields = list(shard_map.shard_key_fields) or [shard_map.shard_key_field]
    status.key = key_pattern(fields, shard_map.strategy == r.HASH)
    for route in shard_map.shards:
        status.chunks[route.shard_id] += len(route.chunks)
    return status


def _member_rows(client: Client, members: list[str]) -> list[list[str]]:
    """One row per replica-set member: address, role and term (from its Hello)."""
    rows = []
    for member in members:
        hello = client.hello(member)
        if hello is None:
            rows.append([member, "UNREACHABLE", "", ""])
            continue
        rows.append([
            member,
            hello.role or ("PRIMARY" if hello.is_primary else "?"),
            f"term: {hello.term}",
            f"applied: {hello.last_applied_op_id}" + ("" if hello.caught_up else " (catching up)"),
        ])
    return rows


def render_status(client: Client) -> str:
    shards = client.call(client.config.ListShards, ext.ListShardsRequest()).shards
    balancer = client.call(client.config.GetBalancerStatus, ext.GetBalancerStatusRequest())
    migrations = client.call(
        client.config.ListMigrations, ext.ListMigrationsRequest(active_only=True)
    ).migrations
    databases = client.call(client.config.ListDatabases, ext.ListDatabasesRequest()).databases

    db_sections: list[tuple[ext.DatabaseInfo, list[CollectionStatus]]] = []
    chunks_per_shard: Counter[str] = Counter()
    for info in sorted(databases, key=lambda d: d.name):
        sharded = set(info.sharded_collections)
        colls = [
            collection_status(client, info.name, name, name in sharded)
            for name in _collection_names(client, info)
        ]
        for coll in colls:
            chunks_per_shard.update(coll.chunks)
        db_sections.append((info, colls))

    lines = [f"--- LauraDB cluster at {client.address} ---", "shards:"]
    rows = [
        [
            s.shard_id,
            f"{s.host}:{s.port}",
            "draining" if s.draining else "active",
            f"chunks: {chunks_per_shard.get(s.shard_id, 0)}",
        ]
        for s in sorted(shards, key=lambda s: s.shard_id)
    ]
    lines += table(rows) or ["  (none)"]
    for s in sorted(shards, key=lambda s: s.shard_id):
        if len(s.members) > 1:
            lines.append(f"  {s.shard_id} replica set members:")
            lines += ["  " + line for line in table(_member_rows(client, list(s.members)))]

    state = "enabled" if balancer.enabled else "disabled"
    lines.append(
        f"balancer: {state}  rounds: {balancer.rounds}  splits: {balancer.splits}  "
        f"migrations: {balancer.migrations_committed} committed, "
        f"{balancer.migrations_failed} failed"
    )
    if balancer.leader:
        lines.append(f"  leader config server: {balancer.leader}")
    elif balancer.answered_by:
        lines.append("  leader config server: none right now (an election is under way)")
    if balancer.last_error:
        lines.append(f"  last error: {balancer.last_error}")
    if balancer.jumbo_chunks:
        lines.append(f"  jumbo chunks: {', '.join(balancer.jumbo_chunks)}")
    lines.append(f"running migrations: {len(migrations) or 'none'}")
    lines += table([
        [m.namespace, f"chunk {m.chunk_id}", f"{m.from_shard} -> {m.to_shard}", m.state,
         f"docs: {m.documents_migrated}"]
        for m in migrations
    ])

    lines.append("databases:")
    if not db_sections:
        lines.append("  (none)")
    for info, colls in db_sections:
        lines.append(f"  {info.name}  primary: {info.primary_shard}")
        for coll in colls:
            lines.extend(_collection_lines(info, coll))
    return "\n".join(lines)


def _collection_lines(info: ext.DatabaseInfo, coll: CollectionStatus) -> list[str]:
    ns = f"{info.name}.{coll.name}"
    if not coll.sharded:
        return [f"    {ns}  unsharded on {info.primary_shard}  documents: {coll.documents}"]
    total = sum(coll.chunks.values())
    lines = [
        f"    {ns}  sharded  key: {coll.key} ({coll.strategy})  "
        f"documents: {coll.documents}  chunks: {total}"
    ]
    rows = [
        [shard, bar(n, total), str(n)]
        for shard, n in sorted(coll.chunks.items())
        if n
    ]
    lines += table(rows, indent="      ")
    return lines
