"""The subcommands. Each takes the client and the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import bson

from lauradb.bsonkit.codec import encode_ordered
from lauradb.cli.client import Client
from lauradb.cli.extjson import UsageError, dumps, parse_document, parse_line
from lauradb.cli.render import key_pattern, table
from lauradb.cli.status import render_status
from lauradb.cluster import router_ext_pb2 as ext
from lauradb.cluster import routing_pb2 as r
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import from_proto
from lauradb.sharding.shard_key import ShardKeyPattern

INSERT_BATCH = 1000


def split_namespace(ns: str) -> tuple[str, str]:
    db, dot, coll = ns.partition(".")
    if not (db and dot and coll):
        raise UsageError(f"INVALID_NAMESPACE: expected DB.COLLECTION, got {ns!r}")
    return db, coll


def split_address(address: str) -> tuple[str, int]:
    host, colon, port = address.rpartition(":")
    if not (host and colon and port.isdigit()):
        raise UsageError(f"BAD_VALUE: expected HOST:PORT, got {address!r}")
    return host, int(port)


# --- status, shards, balancer -----------------------------------------------------------


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    print(render_status(client))
    return 0


def cmd_shard_add(client: Client, args: argparse.Namespace) -> int:
    host, port = split_address(args.address)
    req = r.AddShardRequest(shard_id=args.id, host=host, port=port)
    resp = client.call(client.config.AddShard, req)
    print(f"shard {args.id} at {host}:{port} added{': ' + resp.message if resp.message else ''}")
    return 0


def cmd_shard_remove(client: Client, args: argparse.Namespace) -> int:
    resp = client.call(client.config.RemoveShard, r.RemoveShardRequest(shard_id=args.id))
    state = resp.state or ("completed" if resp.success else "unknown")
    print(
        f"shard {args.id}: {state}  remaining chunks: {resp.remaining_chunks}  "
        f"remaining databases: {resp.remaining_databases}"
    )
    if resp.message:
        print(resp.message)
    return 0


def cmd_shard_list(client: Client, args: argparse.Namespace) -> int:
    shards = client.call(client.config.ListShards, ext.ListShardsRequest()).shards
    rows = [["ID", "ADDRESS", "STATE"]] + [
        [s.shard_id, f"{s.host}:{s.port}", "draining" if s.draining else "active"]
        for s in sorted(shards, key=lambda s: s.shard_id)
    ]
    print("\n".join(table(rows, indent="")))
    return 0


def cmd_balancer(client: Client, args: argparse.Namespace) -> int:
    if args.action in ("start", "stop"):
        req = ext.SetBalancerStateRequest(enabled=args.action == "start")
        resp = client.call(client.config.SetBalancerState, req)
        print(f"balancer {'enabled' if resp.enabled else 'disabled'}")
        return 0
    st = client.call(client.config.GetBalancerStatus, ext.GetBalancerStatusRequest())
    print(f"balancer: {'enabled' if st.enabled else 'disabled'}")
    if st.leader or st.answered_by:
        print(f"leader config server: {st.leader or 'none right now (election under way)'}")
    print(f"rounds: {st.rounds}  splits: {st.splits}  migrations committed: "
          f"{st.migrations_committed}  failed: {st.migrations_failed}")
    print(f"in progress: {len(st.in_progress)}")
    for m in st.in_progress:
        print(f"  {m.namespace} chunk {m.chunk_id}: {m.from_shard} -> {m.to_shard} {m.state}")
    if st.jumbo_chunks:
        print(f"jumbo chunks: {', '.join(st.jumbo_chunks)}")
    if st.last_error:
        print(f"last error: {st.last_error}")
    return 0


# --- collections and chunks -------------------------------------------------------------


def cmd_collection_shard(client: Client, args: argparse.Namespace) -> int:
    db, coll = split_namespace(args.namespace)
    fields = [f.strip() for f in args.key.split(",")]
    if any(not f for f in fields):
        raise UsageError(f"BAD_VALUE: bad shard key {args.key!r}")
    if args.hashed:
        strategy = r.HASH
    else:
        strategy = r.RANGE if len(fields) == 1 else r.COMPOUND
    req = r.ShardCollectionRequest(
        database=db, collection=coll, shard_key_fields=fields, strategy=strategy,
        initial_chunks=args.chunks or 0, unique=args.unique,
    )
    resp = client.call(client.config.ShardCollection, req)
    print(f"sharded {db}.{coll} on {key_pattern(fields, args.hashed)}: {resp.chunks} chunks")
    return 0


def _sharded_map(client: Client, db: str, coll: str) -> tuple[Any, ShardKeyPattern]:
    resp = client.call(client.config.GetShardMap, r.GetShardMapRequest(
        database=db, collection=coll))
    if not resp.sharded:
        raise LauraError(ErrorCode.ILLEGAL_OPERATION, f"{db}.{coll} is not sharded")
    fields = list(resp.shard_key_fields) or [resp.shard_key_field]
    pattern = ShardKeyPattern(fields, "hashed" if resp.strategy == r.HASH else "range")
    return resp, pattern


def _chunk_containing(shard_map: Any, pattern: ShardKeyPattern, key: bytes) -> tuple[Any, str]:
    for route in shard_map.shards:
        for chunk in route.chunks:
            lo = pattern.encode_bound(bson.decode(chunk.min_key))
            hi = pattern.encode_bound(bson.decode(chunk.max_key))
            if lo <= key < hi:
                return chunk, route.shard_id
    raise LauraError(ErrorCode.CHUNK_NOT_FOUND, "no chunk contains that shard key")


def cmd_chunk_split(client: Client, args: argparse.Namespace) -> int:
    db, coll = split_namespace(args.namespace)
    point = parse_document(args.at, "--at")
    shard_map, pattern = _sharded_map(client, db, coll)
    chunk, shard = _chunk_containing(shard_map, pattern, pattern.encode_bound(point))
    req = r.SplitChunkRequest(chunk_id=chunk.chunk_id, split_point=encode_ordered(point))
    resp = client.call(client.config.SplitChunk, req)
    print(f"split chunk {chunk.chunk_id} on {shard} at {dumps(point, None)}: "
          f"{resp.left_chunk_id} | {resp.right_chunk_id}")
    return 0


def cmd_chunk_move(client: Client, args: argparse.Namespace) -> int:
    db, coll = split_namespace(args.namespace)
    doc = parse_document(args.find, "--find")
    shard_map, pattern = _sharded_map(client, db, coll)
    key = pattern.key_for_values(pattern.extract(doc))
    chunk, shard = _chunk_containing(shard_map, pattern, key)
    req = r.MigrateChunkRequest(chunk_id=chunk.chunk_id, from_shard=shard, to_shard=args.to)
    resp = client.call(client.config.MigrateChunk, req)
    if not resp.success:
        if resp.HasField("error_info") and resp.error_info.code:
            raise from_proto(resp.error_info)
        raise LauraError(ErrorCode.OPERATION_FAILED, resp.error or "migration failed")
    print(f"moved chunk {chunk.chunk_id} from {shard} to {args.to}: "
          f"{resp.documents_migrated} documents")
    return 0


# --- indexes ----------------------------------------------------------------------------


def cmd_index_create(client: Client, args: argparse.Namespace) -> int:
    db, coll = split_namespace(args.namespace)
    keys = parse_document(args.keys, "index keys")
    spec = ext.IndexSpec(name=args.name or "", keys=encode_ordered(keys), unique=args.unique,
                         sparse=args.sparse)
    req = ext.CreateIndexRequest(database=db, collection=coll, index=spec)
    resp = client.call(client.router.CreateIndex, req)
    print(f"{'created' if resp.created else 'already exists'}: {resp.name}")
    return 0


def cmd_index_list(client: Client, args: argparse.Namespace) -> int:
    db, coll = split_namespace(args.namespace)
    resp = client.call(client.router.ListIndexes, ext.ListIndexesRequest(
        database=db, collection=coll))
    rows = [["NAME", "KEYS", "OPTIONS"]]
    for spec in resp.indexes:
        opts = [o for o, on in (("unique", spec.unique), ("sparse", spec.sparse)) if on]
        rows.append([spec.name, dumps(bson.decode(spec.keys), None), ",".join(opts)])
    print("\n".join(table(rows, indent="")))
    return 0


def cmd_index_drop(client: Client, args: argparse.Namespace) -> int:
    db, coll = split_namespace(args.namespace)
    resp = client.call(client.router.DropIndex, ext.DropIndexRequest(
        database=db, collection=coll, name=args.name))
    print(f"dropped: {', '.join(resp.dropped) or '(none)'}")
    return 0


# --- data -------------------------------------------------------------------------------


def cmd_query(client: Client, args: argparse.Namespace) -> int:
    db, coll = split_namespace(args.namespace)
    filter_doc = parse_document(args.filter, "filter")
    sort = parse_document(args.sort, "--sort") if args.sort else None
    projection = parse_document(args.projection, "--projection") if args.projection else None
    limit = max(args.limit or 0, 0)
    req = r.QueryRequest(
        database=db, collection=coll, query=bson.encode(filter_doc),
        sort=encode_ordered(sort) if sort is not None else b"",
        projection=bson.encode(projection) if projection is not None else b"",
        limit=limit,
    )
    resp = client.call(client.router.Query, req)
    shown = 0
    while True:
        for raw in resp.documents:
            if limit and shown >= limit:
                break
            print(dumps(bson.decode(raw)))
            shown += 1
        done = limit and shown >= limit
        if not (resp.more_available and resp.cursor_id) or done:
            break
        resp = client.call(client.router.GetMore, ext.GetMoreRequest(cursor_id=resp.cursor_id))
    if resp.more_available and resp.cursor_id:
        try:
            client.call(client.router.KillCursors, ext.KillCursorsRequest(
                cursor_ids=[resp.cursor_id]))
        except LauraError:
            pass  # the router times idle cursors out anyway
    return 0


def _numbered_lines(stream: TextIO) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line


def cmd_insert(client: Client, args: argparse.Namespace) -> int:
    db, coll = split_namespace(args.namespace)
    if args.file == "-":
        lines = list(_numbered_lines(sys.stdin))
    else:
        try:
            with open(args.file, encoding="utf-8") as fh:
                lines = list(_numbered_lines(fh))
        except OSError as exc:
            raise UsageError(f"BAD_VALUE: cannot read {args.file}: {exc.strerror}") from None
    total = len(lines)
    inserted = failed = 0
    for start in range(0, total, INSERT_BATCH):
        docs: list[bytes] = []
        line_of: list[int] = []
        for number, text in lines[start : start + INSERT_BATCH]:
            try:
                docs.append(bson.encode(parse_line(text)))
            except Exception as exc:
                failed += 1
                _report_line(number, exc)
                continue
            line_of.append(number)
        if docs:
            req = r.InsertRequest(database=db, collection=coll, documents=docs, ordered=False)
            resp = client.call(client.router.Insert, req)
            inserted += resp.inserted_count
            for error in resp.errors:
                failed += 1
                number = line_of[error.index] if 0 <= error.index < len(line_of) else -1
                print(f"lauradb: line {number}: {error.code_name or 'ERROR'}: {error.error}",
                      file=sys.stderr)
        print(f"inserted {inserted}/{total}", file=sys.stderr)
    summary = f"inserted {inserted} of {total} documents into {db}.{coll}"
    print(summary + (f" ({failed} failed)" if failed else ""))
    return 1 if failed else 0


def _report_line(number: int, exc: Exception) -> None:
    if isinstance(exc, LauraError):
        text = f"{exc.code_name}: {exc.message}"
    else:
        text = f"BAD_VALUE: {exc}"
    print(f"lauradb: line {number}: {text}", file=sys.stderr)
