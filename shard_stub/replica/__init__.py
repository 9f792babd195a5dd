"""Replica sets of shard members: elections, oplog streaming, write concern (issue 9)."""
