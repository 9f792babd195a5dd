"""Generated protobuf and gRPC code for package ``lauradb.cluster``.

Do not edit: regenerate with ``./dev.sh gen`` (CI fails on drift).
"""
