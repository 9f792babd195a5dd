"""The processes' event loop: uvloop by default, ``LAURADB_EVENT_LOOP=asyncio`` for the
standard one, anything else a BAD_VALUE (with the coroutine closed, never leaked)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import warnings

import pytest

from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.process import EVENT_LOOP_ENV, event_loop_name, run_event_loop


def test_env_var_name() -> None:
    assert EVENT_LOOP_ENV == "LAURADB_EVENT_LOOP"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "uvloop"),
        ("", "uvloop"),
        ("   ", "uvloop"),
        ("uvloop", "uvloop"),
        ("UVLOOP", "uvloop"),
        (" UvLoop\n", "uvloop"),
        ("asyncio", "asyncio"),
        ("ASYNCIO", "asyncio"),
        ("  Asyncio\t", "asyncio"),
    ],
)
def test_event_loop_name(value: str | None, expected: str) -> None:
    environ = {} if value is None else {EVENT_LOOP_ENV: value}
    assert event_loop_name(environ) == expected


@pytest.mark.parametrize("value", ["trio", "uv loop", "asyncio2", "default", "uvloop,asyncio"])
def test_event_loop_name_bad_value(value: str) -> None:
    with pytest.raises(LauraError) as info:
        event_loop_name({EVENT_LOOP_ENV: value})
    assert info.value.code == ErrorCode.BAD_VALUE
    assert EVENT_LOOP_ENV in info.value.message


def test_event_loop_name_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    assert event_loop_name() == "uvloop"
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    assert event_loop_name() == "asyncio"
    monkeypatch.setenv(EVENT_LOOP_ENV, "nope")
    with pytest.raises(LauraError):
        event_loop_name()


def _run_and_report_loop() -> tuple[str, list[str]]:
    seen: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen.append(type(loop).__module__)
        await asyncio.sleep(0)  # the loop actually runs callbacks
        seen.append("done")

    run_event_loop(main())
    return seen[0], seen[1:]


def test_run_event_loop_default_is_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    module, rest = _run_and_report_loop()
    assert module.startswith("uvloop"), module
    assert rest == ["done"]


def test_run_event_loop_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, " AsyncIO ")
    module, rest = _run_and_report_loop()
    assert module.startswith("asyncio"), module
    assert not module.startswith("uvloop")
    assert rest == ["done"]


def test_run_event_loop_explicit_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "uvloop")
    module, _ = _run_and_report_loop()
    assert module.startswith("uvloop"), module


def test_run_event_loop_propagates_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        raise LauraError(ErrorCode.HOST_UNREACHABLE, "boom")

    for name in ("uvloop", "asyncio"):
        monkeypatch.setenv(EVENT_LOOP_ENV, name)
        with pytest.raises(LauraError) as info:
            run_event_loop(main())
        assert info.value.code == ErrorCode.HOST_UNREACHABLE


def test_run_event_loop_bad_value_closes_the_coroutine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "trio")
    ran: list[bool] = []

    async def main() -> None:
        ran.append(True)

    coro = main()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(LauraError) as info:
            run_event_loop(coro)
        assert info.value.code == ErrorCode.BAD_VALUE
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        del coro
        gc.collect()
    assert ran == []
    never_awaited = [w for w in caught if "never awaited" in str(w.message)]
    assert never_awaited == []
