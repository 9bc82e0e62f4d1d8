"""Deprecated: the former single module of downstream tasks, kept so existing imports work.

It was split into modules with one job each; import from them instead:

- :mod:`layerscope.evaluate.sampling`: clipping, stratified samples, label codes, dataset layouts;
- :mod:`layerscope.evaluate.offline`: the offline suite (MTEB task classes over bundled data);
- :mod:`layerscope.evaluate.hub_tasks`: the paper's 32 MTEB hub tasks (:func:`paper32`, :func:`hub_task`);
- :mod:`layerscope.evaluate.registry`: the task registry; :mod:`layerscope.evaluate.catalog`: :func:`resolve`
  (names, groups, task files);
- :mod:`layerscope.evaluate.task_files`: labelled user files as MTEB tasks.

Every name this module exported is re-exported here unchanged (``layerscope.tasks`` is this module).
"""

from __future__ import annotations

from layerscope.evaluate.catalog import describe_offline, is_offline, offline_names, offline_suite, resolve
from layerscope.evaluate.hub_tasks import PAPER32, hub_task, paper32
from layerscope.evaluate.offline import (
    OFFLINE_TASKS,
    BBCNewsClassification,
    BBCNewsClustering,
    BBCNewsSameArticlePairs,
    DebatePartyClassification,
    ElectionTweetsClassification,
    LeeDocumentSTS,
    LocalTask,
    OfflineTask,
    ReutersR8Classification,
    ReutersR8Clustering,
    RottenTomatoesClassification,
    RottenTomatoesPlotReranking,
    TaskInfo,
    TwentyNewsgroupsClusteringOffline,
)
from layerscope.evaluate.sampling import DATA_SEED, MAX_CHARS, clip
from layerscope.evaluate.task_files import task_file

__all__ = [
    "DATA_SEED",
    "MAX_CHARS",
    "OFFLINE_TASKS",
    "PAPER32",
    "BBCNewsClassification",
    "BBCNewsClustering",
    "BBCNewsSameArticlePairs",
    "DebatePartyClassification",
    "ElectionTweetsClassification",
    "LeeDocumentSTS",
    "LocalTask",
    "OfflineTask",
    "ReutersR8Classification",
    "ReutersR8Clustering",
    "RottenTomatoesClassification",
    "RottenTomatoesPlotReranking",
    "TaskInfo",
    "TwentyNewsgroupsClusteringOffline",
    "clip",
    "describe_offline",
    "hub_task",
    "is_offline",
    "offline_names",
    "offline_suite",
    "paper32",
    "resolve",
    "task_file",
]
