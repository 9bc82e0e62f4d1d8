"""What ``--tasks`` accepts, turned into MTEB task objects: the built-in tasks and :func:`resolve`.

Importing this module imports the modules that define the built-in tasks, which register themselves
in :mod:`~layerscope.evaluate.registry` (the registry sits below them and imports none of them).
:func:`resolve` accepts, in any mix (a comma list or a list):

- a group: ``offline``, ``paper32``;
- a registered name (``BBCNewsClassification``, ``STS12``) or another MTEB task name;
- a task file (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``: see :mod:`~layerscope.evaluate.task_files`);
- MTEB task instances, passed through.

Unknown names fail with one line suggesting the nearest name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mteb.abstasks import AbsTask

import layerscope.evaluate.offline_v2  # noqa: F401  (suite v2's tasks register in group offline)
from layerscope.config import TaskFileConfig
from layerscope.errors import LayerscopeError
from layerscope.evaluate.hub_tasks import hub_task
from layerscope.evaluate.offline import LocalTask, OfflineTask, TaskInfo
from layerscope.evaluate.registry import (
    TASK_FILE_SUFFIXES,
    TaskEntry,
    group,
    groups,
    is_task_file,
    register_task,
    registry,
    unknown_task,
)
from layerscope.evaluate.task_files import task_file

__all__ = [
    "TASK_FILE_SUFFIXES",
    "TaskEntry",
    "create",
    "describe_offline",
    "group",
    "groups",
    "is_offline",
    "is_task_file",
    "offline_names",
    "offline_suite",
    "register_task",
    "registry",
    "resolve",
    "unknown_task",
]


def create(name: str, seed: int | None = None) -> AbsTask:
    """A fresh instance of a registered task, or of any MTEB task by name (test split).

    Parameters
    ----------
    name : str
        Task name.
    seed : int, optional
        The task's seed (default: its own, MTEB's 42).
    """
    entry = registry().get(name)
    if entry is not None:
        return entry.factory(seed=seed)
    return hub_task(name, seed=seed)


def is_offline(task: AbsTask) -> bool:
    """Whether a task builds its data locally (no hub needed)."""
    return isinstance(task, LocalTask) or getattr(task.metadata, "dataset", {}).get("path") == "NA"


def _items(tasks: str | Path | AbsTask | Iterable[str | Path | AbsTask]) -> list[str | Path | AbsTask]:
    if isinstance(tasks, str):
        return [part.strip() for part in tasks.split(",") if part.strip()]
    if isinstance(tasks, (Path, AbsTask)):
        return [tasks]
    items: list[str | Path | AbsTask] = []
    for item in tasks:
        items.extend(_items(item) if isinstance(item, str) else [item])
    return items


def resolve(
    tasks: str | Path | AbsTask | Iterable[str | Path | AbsTask],
    seed: int | None = None,
    files: TaskFileConfig | Mapping[str, Any] | None = None,
) -> list[AbsTask]:
    """Turn a task specification into MTEB task instances.

    Parameters
    ----------
    tasks : str, Path, AbsTask or iterable of those
        Groups (``"offline"``, ``"paper32"``), task names, task files (``.csv``, ``.tsv``, ``.jsonl``,
        ``.parquet``), a comma-separated string of any of these, or task instances (passed through).
    seed : int, optional
        Seed of newly created tasks (default: each task's own, MTEB's 42; evaluation reseeds each
        (layer, task) with it).
    files : TaskFileConfig or mapping, optional
        How task files are read: column names, split, clustering (default :class:`TaskFileConfig()`).

    Returns
    -------
    list of AbsTask
        Without duplicates (by name; a file given twice is read once), in the given order. Task files
        are read and checked here, so a bad file fails before any model is loaded.

    Raises
    ------
    LayerscopeError
        Unknown name (suggests the nearest), a bad task file (one line naming the file and the fix), or
        nothing selected.
    """
    file_config = files if isinstance(files, TaskFileConfig) else TaskFileConfig.from_dict(files or {})
    members = groups()
    resolved: list[AbsTask] = []
    read: set[Path] = set()
    for item in _items(tasks):
        if isinstance(item, AbsTask):
            resolved.append(item)
        elif isinstance(item, str) and item in members:
            resolved.extend(create(name, seed) for name in members[item])
        elif isinstance(item, str) and item in registry():
            resolved.append(create(item, seed))
        elif is_task_file(item):
            path = Path(item).expanduser().resolve()
            if path in read:
                continue
            read.add(path)
            taken = {*registry(), *(task.metadata.name for task in resolved)}
            resolved.extend(task_file(item, file_config, seed=seed, taken=taken))
        else:
            resolved.append(create(str(item), seed))
    if not resolved:
        raise LayerscopeError("no tasks selected; use 'offline', 'paper32', task names or task files")
    unique: dict[str, AbsTask] = {}
    for task in resolved:
        unique.setdefault(task.metadata.name, task)
    return list(unique.values())


# ------------------------------------------------------------------ the offline suites (every task registered)


def offline_names(suite: str = "offline") -> list[str]:
    """Names of the tasks of an offline suite (``offline``: the current one, v2; ``offline-v1``)."""
    return group(suite)


def offline_suite(seed: int | None = None, suite: str = "offline") -> list[AbsTask]:
    """Fresh instances of every task of an offline suite.

    Parameters
    ----------
    seed : int, optional
        MTEB task seed (classifier undersampling, clustering); default: the tasks' own, MTEB's 42.
        :func:`~layerscope.evaluate.evaluate_layers` reseeds each (layer, task) with it.
    suite : {"offline", "offline-v1"}
        Which suite (:data:`SUITES`): the current one (v2, default) or v1's 11 tasks.
    """
    return [create(name, seed) for name in offline_names(suite)]


def describe_offline(suite: str = "offline") -> list[TaskInfo]:
    """Describe the tasks of an offline suite (loads their data to count unique texts; a few seconds, and
    the first use fetches the archives of suite v2's data)."""
    rows = []
    for task in offline_suite(suite=suite):
        assert isinstance(task, OfflineTask)
        rows.append(
            TaskInfo(
                name=task.metadata.name,
                type=task.metadata.type,
                n_texts=len(task.texts()),
                main_score=task.metadata.main_score,
                corpus=task.corpus,
                source=task.source,
                license=task.license_note,
                description=task.metadata.description,
            )
        )
    return rows
