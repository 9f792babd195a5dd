"""Distributed transactions on a shard: the participant (prepare/commit/abort with
document locks), the coordinator record, and their durable rows (``records``).

See ``/work/notes/txn_design.md`` and the README's "Transactions" section."""
