"""Small text helpers: bars and aligned tables."""

from __future__ import annotations

from collections.abc import Sequence

BAR_WIDTH = 10


def bar(part: int, total: int, width: int = BAR_WIDTH) -> str:
    """``████████░░``: ``part`` of ``total`` (any non-zero part shows at least one block)."""
    if total <= 0:
        return "░" * width
    filled = round(part * width / total)
    if part > 0:
        filled = max(filled, 1)
    filled = min(filled, width)
    return "█" * filled + "░" * (width - filled)


def table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows of cells, left aligned in columns, trailing spaces stripped."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(map(len, rows)))]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def key_pattern(fields: Sequence[str], hashed: bool) -> str:
    """``{ k: 1, k2: 1 }`` or ``{ k: "hashed" }``."""
    parts = [f'{f}: "hashed"' if hashed and i == 0 else f"{f}: 1" for i, f in enumerate(fields)]
    return "{ " + ", ".join(parts) + " }"
