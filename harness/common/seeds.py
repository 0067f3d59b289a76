"""Seed variants of a model: one name rule for the configs (`${seeded:<base>,${.seed}}`) and the zoo builds.

Seed 0 (or none) is the base name itself, so a family's first member keeps the name it had before seeds
existed (circuit-trajectories/zoo-neox); seed s is `<base>-seed<s>`, as PolyPythia names its seeds.
"""
from __future__ import annotations

from omegaconf import OmegaConf


def seeded(base: str, seed) -> str:
    return base if seed in (None, 0, "0", "") else f"{base}-seed{seed}"


def register() -> None:
    """Make `${seeded:...}` available to OmegaConf (idempotent). Called where our config is composed or read (the
    Hydra plugin, `ls models`), never at import: a library leaves the user's OmegaConf registry as it found it."""
    if not OmegaConf.has_resolver("seeded"):
        OmegaConf.register_new_resolver("seeded", seeded)
