"""The seeds of evaluations: every (layer, task) starts from the RNG state a freshly created task has.

Used by the tasks (a hub task created with a seed) and by the runner and the bootstrap (every
evaluation reseeded, a seed override applied to one call only).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

__all__ = ["own_seeds_kept", "reseed", "task_seed"]


def reseed(task: AbsTask, seed: int) -> None:
    """Put ``task`` and the global RNGs in the state a fresh ``type(task)(seed=seed)`` would have."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - MTEB's evaluators draw from the legacy global RNG
    torch.manual_seed(seed)
    task.seed = seed
    task.rng_state, task.np_rng = random.Random(seed), np.random.default_rng(seed)


def task_seed(task: AbsTask, seed: int | None) -> int:
    """The seed of an evaluation: ``seed`` if given, else the task's own (MTEB's 42 unless created with another)."""
    return int(task.seed) if seed is None else int(seed)


@contextlib.contextmanager
def own_seeds_kept(tasks: Sequence[AbsTask]) -> Iterator[None]:
    """Give each task its own seed back afterwards (an override applies to one call only)."""
    seeds = [task.seed for task in tasks]
    try:
        yield
    finally:
        for task, seed in zip(tasks, seeds, strict=True):
            if task.seed != seed:
                task.seed = seed
                task.rng_state, task.np_rng = random.Random(seed), np.random.default_rng(seed)
