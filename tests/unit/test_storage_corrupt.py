"""A corrupt shard data file: a standalone shard refuses to start with a clear error;
a replica-set member (``recover_corrupt``) moves it aside and starts empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from lauradb.errors import ErrorCode, LauraError
from shard_stub.storage import DB_FILENAME, ShardStorage


def _corrupt_store(path: Path) -> None:
    storage = ShardStorage(path)
    storage.open()
    storage.close()
    (path / DB_FILENAME).write_bytes(b"not a database " * 1000)


def test_standalone_refuses_a_corrupt_file(tmp_path: Path) -> None:
    _corrupt_store(tmp_path)
    storage = ShardStorage(tmp_path)
    with pytest.raises(LauraError) as info:
        storage.open()
    assert info.value.code == ErrorCode.OPERATION_FAILED
    assert "is corrupt" in info.value.message and "standalone" in info.value.message
    assert (tmp_path / DB_FILENAME).exists()  # left alone for the operator
    assert not list(tmp_path.glob(f"{DB_FILENAME}.corrupt-*"))


def test_member_moves_a_corrupt_file_aside(tmp_path: Path) -> None:
    _corrupt_store(tmp_path)
    storage = ShardStorage(tmp_path)
    storage.open(recover_corrupt=True)
    try:
        assert storage.is_open
        assert storage.namespaces() == []
    finally:
        storage.close()
    aside = list(tmp_path.glob(f"{DB_FILENAME}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a database")
