"""The task registry and :func:`resolve`: what ``--tasks`` accepts, turned into MTEB task objects.

A task is known by name to the registry: each offline task class registers itself (group
``offline``), and the paper's 32 hub tasks register factories (group ``paper32``). Any other MTEB
task name is looked up in MTEB's own registry. :func:`resolve` accepts, in any mix (a comma list or a
list):

- a group: ``offline``, ``paper32``;
- a registered name (``BBCNewsClassification``, ``STS12``) or another MTEB task name;
- a task file (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``: see :mod:`~layerscope.evaluate.task_files`);
- MTEB task instances, passed through.

Unknown names fail with one line suggesting the nearest name. Adding an offline task is one class in
:mod:`~layerscope.evaluate.offline` (it registers itself); any other task registers with
:func:`register_task` (a class decorator, or a call with a factory).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mteb.abstasks import AbsTask

from layerscope.errors import LayerscopeError

if TYPE_CHECKING:
    from layerscope.config import TaskFileConfig

__all__ = [
    "TASK_FILE_SUFFIXES",
    "TaskEntry",
    "create",
    "group",
    "groups",
    "is_offline",
    "is_task_file",
    "register_task",
    "registry",
    "resolve",
    "unknown_task",
]

#: Suffixes of task files (labelled tables that become MTEB tasks).
TASK_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")

# Modules whose import registers the built-in tasks (imported on the first registry look-up).
_BUILTIN_MODULES = ("layerscope.evaluate.offline", "layerscope.evaluate.offline_v2", "layerscope.evaluate.hub_tasks")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class TaskEntry:
    """One registered task.

    Attributes
    ----------
    name : str
        The MTEB task name users type.
    factory : callable
        ``factory(seed=None)`` -> a fresh task instance (``seed=None``: the task's own seed, MTEB's 42).
    groups : tuple of str
        Groups that include the task (``offline``, ``paper32``).
    local : bool
        Whether the task builds its data locally (no network).
    origin : str
        The registered class or function (module and name), to tell a repeat from a clash.
    """

    name: str
    factory: Callable[..., AbsTask]
    groups: tuple[str, ...] = ()
    local: bool = True
    origin: str = ""


_REGISTRY: dict[str, TaskEntry] = {}


def register_task(factory: F | None = None, *, name: str | None = None, groups: Iterable[str] = (),
                  local: bool = True) -> Any:
    """Register a task class or factory under its name; usable as a class decorator.

    Parameters
    ----------
    factory : callable, optional
        A task class (its ``metadata.name`` is the name) or a function ``factory(seed=None)``.
        Omitted: returns a decorator.
    name : str, optional
        The name (required for plain functions).
    groups : iterable of str
        Groups the task belongs to, in registration order.
    local : bool
        Whether the task needs no network.

    Returns
    -------
    The factory, unchanged (or a decorator).
    """

    def add(target: F) -> F:
        task_name = name or target.metadata.name  # type: ignore[attr-defined]
        function = getattr(target, "func", target)  # a functools.partial names its function
        origin = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"
        if task_name in _REGISTRY and _REGISTRY[task_name].origin != origin:
            raise ValueError(f"task '{task_name}' is already registered by {_REGISTRY[task_name].origin}")
        _REGISTRY[task_name] = TaskEntry(task_name, _seeded(target), tuple(groups), local, origin)
        return target

    return add if factory is None else add(factory)


def _seeded(factory: Callable[..., AbsTask]) -> Callable[..., AbsTask]:
    """``factory(seed=None)``: a class is called without a seed when none is given (its own default)."""
    if isinstance(factory, type):
        return lambda seed=None: factory() if seed is None else factory(seed=seed)
    return factory


def registry() -> Mapping[str, TaskEntry]:
    """Every registered task by name (the built-in ones are registered on first use)."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    return _REGISTRY


def groups() -> dict[str, list[str]]:
    """Group name -> its task names, in registration order."""
    out: dict[str, list[str]] = {}
    for entry in registry().values():
        for group_name in entry.groups:
            out.setdefault(group_name, []).append(entry.name)
    return out


def group(name: str) -> list[str]:
    """Task names of a group (``offline``, ``paper32``)."""
    members = groups()
    if name not in members:
        raise LayerscopeError(f"unknown task group '{name}'; groups: {', '.join(members)}")
    return members[name]


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
    from layerscope.evaluate.hub_tasks import hub_task

    return hub_task(name, seed=seed)


def is_offline(task: AbsTask) -> bool:
    """Whether a task builds its data locally (no hub needed)."""
    from layerscope.evaluate.offline import LocalTask

    return isinstance(task, LocalTask) or getattr(task.metadata, "dataset", {}).get("path") == "NA"


def is_task_file(item: str | Path) -> bool:
    """Whether a ``--tasks`` item names a task file (a task file suffix, a path, or an existing file)."""
    if isinstance(item, Path):
        return True
    path = Path(item).expanduser()
    return (path.suffix.lower() in TASK_FILE_SUFFIXES or item.startswith((".", "/", "~")) or "/" in item
            or path.is_file())


def unknown_task(name: str) -> LayerscopeError:
    """The one-line error for an unknown task name, suggesting the nearest known name."""
    import mteb

    known = list(registry())
    try:
        from mteb.get_tasks import _TASKS_REGISTRY  # names only; instantiating 1,500 tasks takes seconds

        known += [task for task in _TASKS_REGISTRY if task not in _REGISTRY]
    except ImportError:  # pragma: no cover - private name moved in a later mteb
        known += [t.metadata.name for t in mteb.get_tasks()]
    close = difflib.get_close_matches(name, [*groups(), *known], n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return LayerscopeError(
        f"unknown task '{name}'{hint}; use 'offline', 'paper32', an offline task ({', '.join(group('offline'))}), "
        f"an MTEB task name or a task file ({', '.join(TASK_FILE_SUFFIXES)})"
    )


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
    from layerscope.config import TaskFileConfig

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
            from layerscope.evaluate.task_files import task_file

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
