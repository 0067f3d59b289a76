"""Counts as people read them: token counts in listings, alerts and reports."""
from __future__ import annotations


def human(n: int | float | None) -> str:
    """2097152 -> 2.1M, 6291456000 -> 6.3B; None -> ?."""
    if n is None:
        return "?"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))
