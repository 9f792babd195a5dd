"""``lauradb``: the admin command line (shards, collections, chunks, balancer, data)."""
