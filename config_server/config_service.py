"""ConfigService: shards, databases, sharded collections, their chunks and index records."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from grpc import aio

from config_server import convert, index_records
from config_server.balancer import Balancer
from config_server.catalog import Catalog, DroppedNamespaces
from config_server.leader_duties import LeaderDuties
from config_server.migrations import Migrator
from config_server.model import HASH, IndexRecord, MigrationRecord, combined_version
from config_server.move_primary import PrimaryMover
from config_server.replset_checks import check_members_agree
from config_server.shard_notifier import ShardNotifier
from config_server.shard_removal import STARTED, ShardRemoval
from lauradb.bsonkit.codec import decode_document, encode_ordered
from lauradb.cluster import router_ext_pb2, routing_pb2, routing_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.replset import validate_members
from lauradb.replset.monitor import HelloFn
from lauradb.rpc.errors import to_proto
from lauradb.rpc.server import rpc_method

log = logging.getLogger("lauradb.config.service")

Context = aio.ServicerContext[Any, Any]

CONFIG_SERVICE = routing_pb2.DESCRIPTOR.services_by_name["ConfigService"].full_name


def _strategy_name(value: int) -> str:
    try:
        return routing_pb2.ShardingStrategy.Name(value)  # type: ignore[arg-type]
    except ValueError:
        raise LauraError(ErrorCode.BAD_VALUE, f"unknown sharding strategy {value}") from None


def _index_spec(record: IndexRecord) -> router_ext_pb2.IndexSpec:
    return router_ext_pb2.IndexSpec(
        name=record.name,
        keys=encode_ordered(dict(record.keys)),
        unique=record.unique,
        sparse=record.sparse,
    )


def _migration_info(record: MigrationRecord) -> router_ext_pb2.MigrationInfo:
    return router_ext_pb2.MigrationInfo(
        migration_id=record.migration_id,
        namespace=record.namespace,
        chunk_id=record.chunk_id,
        from_shard=record.from_shard,
        to_shard=record.to_shard,
        state=record.state,
        documents_migrated=record.documents_migrated,
        started_ms=record.started_ms,
        finished_ms=record.finished_ms,
        error=record.error,
    )


class ConfigService(routing_pb2_grpc.ConfigServiceServicer):
    def __init__(
        self,
        catalog: Catalog,
        notifier: ShardNotifier,
        migrator: Migrator,
        balancer: Balancer,
        removal: ShardRemoval,
        mover: PrimaryMover | None = None,
        hello: HelloFn | None = None,
    ) -> None:
        self.catalog = catalog
        self.hello = hello  # Hello on a member (member-list consistency checks)
        self.mover = mover or PrimaryMover(catalog, notifier, migrator.rpc)
        self.notifier = notifier
        self.migrator = migrator
        self.balancer = balancer
        self.removal = removal
        # who leads (set by the app once it listens); None: the only config server
        self.leader: LeaderDuties | None = None

    async def _on_leader(
        self, method: str, request: Any, response_type: Any, context: Context
    ) -> Any | None:
        """The leader's answer when this config server does not lead (see
        ``config_server.leader_duties``); None: handle the call here."""
        if self.leader is None:
            return None
        return await self.leader.forward(CONFIG_SERVICE, method, request, response_type, context)

    @rpc_method
    async def AddShard(
        self, request: routing_pb2.AddShardRequest, context: Context
    ) -> routing_pb2.AddShardResponse:
        if not request.shard_id:
            raise LauraError(ErrorCode.BAD_VALUE, "shard_id is required")
        if not request.host or not 0 < request.port < 65536:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"shard '{request.shard_id}' needs a host and a port in 1..65535, "
                f"got {request.host!r}:{request.port}",
            )
        seed = f"{request.host}:{request.port}"
        members = validate_members(request.members)
        if members and seed not in members:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"shard '{request.shard_id}': members {members} must include host:port {seed}",
            )
        replset = ""
        if len(members) > 1:
            replset = await self.notifier.check_members(request.shard_id, members)
            if self.hello is not None:
                await check_members_agree(request.shard_id, members, self.hello)
        else:
            await self.notifier.check_health(request.shard_id, request.host, request.port)
        outcome = self.catalog.add_shard(
            request.shard_id, request.host, request.port, request.node_id, members
        )
        where = f"replica set '{replset}' [{', '.join(members)}]" if replset else seed
        log.info("shard %s at %s: %s", request.shard_id, where, outcome)
        if outcome == "added":
            self.balancer.wake()
        return routing_pb2.AddShardResponse(
            success=True,
            message=f"shard '{request.shard_id}' {outcome} at {where}",
        )

    @rpc_method
    async def RemoveShard(
        self, request: routing_pb2.RemoveShardRequest, context: Context
    ) -> routing_pb2.RemoveShardResponse:
        led = await self._on_leader(
            "RemoveShard", request, routing_pb2.RemoveShardResponse, context
        )
        if led is not None:
            return led  # type: ignore[no-any-return]
        status = self.removal.request(request.shard_id)
        if status.state == STARTED:
            log.info("shard %s: draining started", request.shard_id)
            self.balancer.wake()
        elif status.remaining_chunks == 0 and status.remaining_databases == 0:
            log.info("shard %s: %s", request.shard_id, status.message)
        return routing_pb2.RemoveShardResponse(
            success=True,
            message=status.message,
            state=status.state,
            remaining_chunks=status.remaining_chunks,
            remaining_databases=status.remaining_databases,
        )

    @rpc_method
    async def MovePrimary(
        self, request: router_ext_pb2.MovePrimaryConfigRequest, context: Context
    ) -> router_ext_pb2.MovePrimaryConfigResponse:
        led = await self._on_leader(
            "MovePrimary", request, router_ext_pb2.MovePrimaryConfigResponse, context
        )
        if led is not None:
            return led  # type: ignore[no-any-return]
        result = await self.mover.move(request.database, request.to_shard)
        return router_ext_pb2.MovePrimaryConfigResponse(
            success=True,
            from_shard=result.move.from_shard,
            to_shard=result.move.to_shard,
            collections_moved=result.collections,
            documents_moved=result.documents,
        )

    @rpc_method
    async def CommitMovePrimary(
        self, request: router_ext_pb2.CommitMovePrimaryRequest, context: Context
    ) -> router_ext_pb2.CommitMovePrimaryResponse:
        led = await self._on_leader(
            "CommitMovePrimary", request, router_ext_pb2.CommitMovePrimaryResponse, context
        )
        if led is not None:
            return led  # type: ignore[no-any-return]
        committed = await self.mover.commit(
            request.database, request.from_shard, request.to_shard, request.operation_id
        )
        return router_ext_pb2.CommitMovePrimaryResponse(committed=committed)

    @rpc_method
    async def SplitChunk(
        self, request: routing_pb2.SplitChunkRequest, context: Context
    ) -> routing_pb2.SplitChunkResponse:
        if not request.chunk_id:
            raise LauraError(ErrorCode.BAD_VALUE, "chunk_id is required")
        if not request.split_point:
            raise LauraError(ErrorCode.INVALID_SPLIT_POINT, "split_point is required")
        point = decode_document(request.split_point, "split_point")
        left, right = self.catalog.split_chunk(request.chunk_id, point)
        database, _, collection = left.namespace.partition(".")
        try:
            owner = self.catalog.get_shard(left.shard_id)
        except LauraError:
            log.warning("chunk %s is owned by unknown shard %s", left.chunk_id, left.shard_id)
        else:
            await self.notifier.refresh([owner], database, collection)
        return routing_pb2.SplitChunkResponse(
            success=True, left_chunk_id=left.chunk_id, right_chunk_id=right.chunk_id
        )

    @rpc_method
    async def MigrateChunk(
        self, request: routing_pb2.MigrateChunkRequest, context: Context
    ) -> routing_pb2.MigrateChunkResponse:
        led = await self._on_leader(
            "MigrateChunk", request, routing_pb2.MigrateChunkResponse, context
        )
        if led is not None:
            return led  # type: ignore[no-any-return]
        outcome = await self.migrator.migrate(
            request.chunk_id, request.from_shard, request.to_shard
        )
        if outcome.success:
            return routing_pb2.MigrateChunkResponse(
                success=True, documents_migrated=outcome.record.documents_migrated
            )
        err = outcome.error or LauraError(ErrorCode.OPERATION_FAILED, outcome.record.error)
        return routing_pb2.MigrateChunkResponse(
            success=False, error=str(err), error_info=to_proto(err)
        )

    @rpc_method
    async def CommitChunkMigration(
        self, request: router_ext_pb2.CommitChunkMigrationRequest, context: Context
    ) -> router_ext_pb2.CommitChunkMigrationResponse:
        result = self.migrator.commit(
            request.migration_id,
            request.chunk_id,
            request.from_shard,
            request.to_shard,
            request.epoch,
        )
        return router_ext_pb2.CommitChunkMigrationResponse(
            committed=True, major=result.major, minor=result.minor
        )

    @rpc_method
    async def GetMigrationState(
        self, request: router_ext_pb2.GetMigrationStateRequest, context: Context
    ) -> router_ext_pb2.GetMigrationStateResponse:
        record = self.migrator.meta.get(request.migration_id)
        return router_ext_pb2.GetMigrationStateResponse(migration=_migration_info(record))

    @rpc_method
    async def ListMigrations(
        self, request: router_ext_pb2.ListMigrationsRequest, context: Context
    ) -> router_ext_pb2.ListMigrationsResponse:
        records = self.migrator.meta.list_migrations(
            active_only=request.active_only, limit=request.limit or 100
        )
        return router_ext_pb2.ListMigrationsResponse(
            migrations=[_migration_info(r) for r in records]
        )

    @rpc_method
    async def SetBalancerState(
        self, request: router_ext_pb2.SetBalancerStateRequest, context: Context
    ) -> router_ext_pb2.SetBalancerStateResponse:
        led = await self._on_leader(
            "SetBalancerState", request, router_ext_pb2.SetBalancerStateResponse, context
        )
        if led is not None:
            return led  # type: ignore[no-any-return]
        return router_ext_pb2.SetBalancerStateResponse(
            enabled=self.balancer.set_enabled(request.enabled)
        )

    @rpc_method
    async def GetBalancerStatus(
        self, request: router_ext_pb2.GetBalancerStatusRequest, context: Context
    ) -> router_ext_pb2.GetBalancerStatusResponse:
        leader = ""
        if self.leader is not None:
            try:
                led = await self._on_leader(
                    "GetBalancerStatus", request, router_ext_pb2.GetBalancerStatusResponse,
                    context,
                )
            except LauraError as err:  # nobody leads right now: what this server knows
                log.debug("balancer status from the leader: %s", err)
            else:
                if led is not None:
                    return led  # type: ignore[no-any-return]
            if self.leader.is_leader:
                leader = self.leader.address
            else:
                self.balancer.reload_enabled()
        status = self.balancer.status()
        return router_ext_pb2.GetBalancerStatusResponse(
            leader=leader,
            answered_by=self.leader.address if self.leader is not None else "",
            enabled=status.enabled,
            rounds=status.rounds,
            splits=status.splits,
            migrations_committed=status.migrations_committed,
            migrations_failed=status.migrations_failed,
            in_progress=[_migration_info(r) for r in status.in_progress],
            jumbo_chunks=status.jumbo_chunks,
            last_error=status.last_error,
        )

    @rpc_method
    async def ShardCollection(
        self, request: routing_pb2.ShardCollectionRequest, context: Context
    ) -> routing_pb2.ShardCollectionResponse:
        strategy = _strategy_name(request.strategy)
        fields = list(request.shard_key_fields)
        plan = self.catalog.plan_shard_collection(
            request.database, request.collection, fields, strategy, request.initial_chunks
        )
        primary_has_data = False
        if plan.strategy == HASH and plan.chunk_count > 1 and plan.existing_primary is not None:
            count = await self.notifier.count_documents(
                plan.existing_primary, request.database, request.collection
            )
            # Unknown (primary not answering): keep every chunk on the primary, as
            # with data; documents there must never become orphans.
            primary_has_data = count is None or count > 0
        record, chunks = self.catalog.shard_collection(
            request.database,
            request.collection,
            fields,
            strategy,
            request.initial_chunks,
            request.unique,
            primary_has_data=primary_has_data,
        )
        failed = await self.notifier.refresh(
            self.catalog.list_shards(), request.database, request.collection
        )
        top = max(chunks, key=lambda c: (c.major, c.minor))
        message = f"collection '{record.namespace}' sharded into {len(chunks)} chunk(s)"
        if failed:
            message += f"; shards not refreshed: {', '.join(failed)}"
        return routing_pb2.ShardCollectionResponse(
            success=True,
            message=message,
            epoch=record.epoch,
            version=combined_version(top.major, top.minor),
            chunks=len(chunks),
        )

    @rpc_method
    async def ListShards(
        self, request: router_ext_pb2.ListShardsRequest, context: Context
    ) -> router_ext_pb2.ListShardsResponse:
        return router_ext_pb2.ListShardsResponse(
            shards=[convert.shard_info(s) for s in self.catalog.list_shards()]
        )

    @rpc_method
    async def GetShardMap(
        self, request: routing_pb2.GetShardMapRequest, context: Context
    ) -> routing_pb2.GetShardMapResponse:
        view = self.catalog.shard_map(
            request.database,
            request.collection,
            version=request.version,
            epoch=request.epoch,
            incremental=request.incremental,
        )
        return convert.shard_map_response(view)

    @rpc_method
    async def EnsureDatabase(
        self, request: router_ext_pb2.EnsureDatabaseRequest, context: Context
    ) -> router_ext_pb2.EnsureDatabaseResponse:
        db, created = self.catalog.ensure_database(request.database)
        return router_ext_pb2.EnsureDatabaseResponse(
            database=db.name, primary_shard=db.primary_shard, created=created
        )

    @rpc_method
    async def ListDatabases(
        self, request: router_ext_pb2.ListDatabasesRequest, context: Context
    ) -> router_ext_pb2.ListDatabasesResponse:
        return router_ext_pb2.ListDatabasesResponse(
            databases=[
                router_ext_pb2.DatabaseInfo(
                    name=v.database.name,
                    primary_shard=v.database.primary_shard,
                    collections=v.sharded_collections,
                    sharded_collections=v.sharded_collections,
                )
                for v in self.catalog.list_databases()
            ]
        )

    # ----------------------------------------------------------------- indexes

    @rpc_method
    async def RecordIndex(
        self, request: router_ext_pb2.RecordIndexRequest, context: Context
    ) -> router_ext_pb2.RecordIndexResponse:
        spec = request.index
        index_records.validate_name(spec.name)
        if not spec.keys:
            raise LauraError(ErrorCode.BAD_VALUE, "bad index key pattern: no index keys given")
        keys = index_records.parse_keys(decode_document(spec.keys, "index keys"))
        created = self.catalog.record_index(
            request.database,
            request.collection,
            spec.name,
            keys,
            unique=spec.unique,
            sparse=spec.sparse,
        )
        if created:
            log.info(
                "%s.%s: index %s %s recorded", request.database, request.collection,
                spec.name, index_records.keys_text(keys),
            )
        return router_ext_pb2.RecordIndexResponse(created=created)

    @rpc_method
    async def RemoveIndexRecord(
        self, request: router_ext_pb2.RemoveIndexRecordRequest, context: Context
    ) -> router_ext_pb2.RemoveIndexRecordResponse:
        removed = self.catalog.remove_index_record(
            request.database, request.collection, request.name
        )
        return router_ext_pb2.RemoveIndexRecordResponse(removed=removed)

    @rpc_method
    async def GetCollectionIndexes(
        self, request: router_ext_pb2.GetCollectionIndexesRequest, context: Context
    ) -> router_ext_pb2.GetCollectionIndexesResponse:
        records = self.catalog.collection_indexes(request.database, request.collection)
        return router_ext_pb2.GetCollectionIndexesResponse(
            indexes=[_index_spec(r) for r in records]
        )

    # ------------------------------------------------------------------- drops

    async def _refresh_dropped(self, result: DroppedNamespaces) -> None:
        """Tell every shard that the sharded namespaces are gone (as ShardCollection
        does after sharding): none keeps routing by the old epoch."""
        if not result.sharded:
            return
        shards = self.catalog.list_shards()
        outcomes = await asyncio.gather(
            *(
                self.notifier.refresh(shards, *namespace.split(".", 1))
                for namespace in result.sharded
            )
        )
        for namespace, failed in zip(result.sharded, outcomes, strict=True):
            if failed:
                log.warning("%s dropped; shards not refreshed: %s", namespace, ", ".join(failed))

    @rpc_method
    async def DropCollectionMetadata(
        self, request: router_ext_pb2.DropCollectionMetadataRequest, context: Context
    ) -> router_ext_pb2.DropCollectionMetadataResponse:
        result = self.catalog.drop_collection_metadata(request.database, request.collection)
        await self._refresh_dropped(result)
        if result.dropped:
            log.info("%s.%s: metadata dropped", request.database, request.collection)
        return router_ext_pb2.DropCollectionMetadataResponse(dropped=result.dropped)

    @rpc_method
    async def DropDatabaseMetadata(
        self, request: router_ext_pb2.DropDatabaseMetadataRequest, context: Context
    ) -> router_ext_pb2.DropDatabaseMetadataResponse:
        result = self.catalog.drop_database_metadata(request.database)
        await self._refresh_dropped(result)
        if result.dropped:
            log.info("database %s: metadata dropped", request.database)
        return router_ext_pb2.DropDatabaseMetadataResponse(dropped=result.dropped)
