"""Seeding in one place: a run's seed (and, for a resumed run, where it resumes) gives its torch and numpy
random streams, so the same seed gives the same run whatever job runs it."""

from __future__ import annotations

import numpy as np


def derived_seed(seed: int, *keys: int) -> int:
    """An independent 32-bit seed for the stream ``keys`` of ``seed`` (e.g. one per episode)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def seed_run(seed: int, *keys: int) -> np.random.Generator:
    """Seed torch's global generator and return the numpy generator of stream ``keys`` of ``seed``
    (no keys: the run's main stream, ``default_rng(seed)``)."""
    import torch

    torch.manual_seed(derived_seed(seed, *keys) if keys else seed)
    return np.random.default_rng([seed, *keys] if keys else seed)
