"""How a head is named everywhere (store info, findings, reports): `L<layer>H<head>`, both 0-based."""
from __future__ import annotations

import re

import numpy as np

_NAME = re.compile(r"^L(\d+)H(\d+)$")


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def parse_head_name(name: str) -> tuple[int, int]:
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"not a head name: {name!r} (expected L<layer>H<head>, e.g. L4H4)")
    return int(m.group(1)), int(m.group(2))


def head_names(mask) -> list[str]:
    """Boolean (layers, heads) -> ["L4H4", ...] in layer, head order."""
    return [head_name(int(layer), int(head)) for layer, head in zip(*np.nonzero(np.asarray(mask)))]
