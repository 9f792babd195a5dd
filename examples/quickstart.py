"""LauraDB quickstart: shard a collection, write, query, aggregate.

Start a local cluster first (``./dev.sh up``), then::

    .venv/bin/python examples/quickstart.py              # the router at localhost:27017
    .venv/bin/python examples/quickstart.py HOST:PORT    # or another router (or $LAURADB_ADDRESS)

It works in the database ``quickstart``, which it drops first.
"""

from __future__ import annotations

import datetime
import os
import sys

from lauradb.client import Client, DuplicateKeyError, OperationFailure


def main(address: str) -> None:
    with Client(address, timeout=30) as client:
        client.drop_database("quickstart")
        orders = client.quickstart.orders

        # Spread orders over the shards by a hash of the customer.
        client.admin.shard_collection("quickstart.orders", {"customer": "hashed"})

        # Writes: _id is generated client-side when absent (and set on the dict).
        order = {"customer": "ada", "total": 42, "at": datetime.datetime(2024, 1, 1)}
        print("inserted", orders.insert_one(order).inserted_id, "==", order["_id"])
        orders.insert_many(
            [{"customer": f"c{i % 20}", "total": i, "items": i % 3 + 1} for i in range(1, 1001)]
        )
        orders.update_one({"customer": "ada"}, {"$inc": {"total": 8}})
        print("orders:", orders.count_documents({}))

        # Queries: lazy cursors, pymongo-style chaining; batches come as needed.
        top = orders.find({"total": {"$gte": 990}}, {"_id": 0, "customer": 1, "total": 1})
        print("top orders:", [d["total"] for d in top.sort("total", -1).limit(5)])
        print("ada:", orders.find_one({"customer": "ada"}, {"_id": 0}))

        # Aggregation across the shards, merged by the router.
        per_customer = orders.aggregate([
            {"$group": {"_id": "$customer", "spent": {"$sum": "$total"}}},
            {"$sort": {"spent": -1}},
            {"$limit": 3},
        ])
        print("best customers:", [(d["_id"], d["spent"]) for d in per_customer])

        # Errors are exceptions keyed on the protocol's codes.
        try:
            orders.insert_one({"_id": order["_id"], "customer": "ada"})
        except DuplicateKeyError as exc:
            print("duplicate:", exc.code_name, exc.code)
        try:
            orders.find_one({"$nonsense": 1})
        except OperationFailure as exc:
            print("bad filter:", exc.code_name)

        # The cluster at a glance.
        status = client.admin.status()
        for db in status.databases:
            for coll in db.collections:
                if db.name == "quickstart":
                    print(f"{db.name}.{coll.name}: {coll.documents} documents, "
                          f"chunks per shard {coll.chunks}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LAURADB_ADDRESS", "localhost:27017"))
