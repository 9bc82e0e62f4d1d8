"""The task registry: where tasks register themselves by name, below every module that defines tasks.

A task is known by name to the registry: each offline task class registers itself (group
``offline``), and the paper's 32 hub tasks register factories (group ``paper32``). The registry
imports none of them: :mod:`~layerscope.evaluate.catalog` imports the modules that define the
built-in tasks (so they are registered) and holds :func:`~layerscope.evaluate.catalog.resolve`,
what ``--tasks`` accepts. Adding an offline task is one class in :mod:`~layerscope.evaluate.offline`
(it registers itself); any other task registers with :func:`register_task` (a class decorator, or a
call with a factory).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mteb.abstasks import AbsTask

from layerscope.errors import LayerscopeError

__all__ = [
    "TASK_FILE_SUFFIXES",
    "TaskEntry",
    "group",
    "groups",
    "is_task_file",
    "register_task",
    "registry",
    "unknown_task",
]

#: Suffixes of task files (labelled tables that become MTEB tasks).
TASK_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")

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
    """Every registered task by name (the built-in ones once :mod:`~layerscope.evaluate.catalog` is imported)."""
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
        f"unknown task '{name}'{hint}; use 'offline', 'paper32', an offline task ({', '.join(groups().get('offline', []))}), "
        f"an MTEB task name or a task file ({', '.join(TASK_FILE_SUFFIXES)})"
    )
