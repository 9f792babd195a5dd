"""Small things every part of the engine shares."""

from __future__ import annotations

from typing import Any, Final


class _Missing:
    """The value of a field that is not there (distinct from BSON null)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Missing, ())


MISSING: Final = _Missing()
