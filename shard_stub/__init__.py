"""The shard node: documents of the chunks it owns, in SQLite, behind ShardService."""
