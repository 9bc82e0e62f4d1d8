"""Sweep files: many (model, revision, dataset) runs described once, split into resumable units.

A sweep file (YAML or JSON) looks like this::

    job: analyze              # analyze (metrics + task scores per layer) | metrics (label-free only)
    out: runs/sweep
    models:
      - smollm2-135m
      - minilm-l6
      - name: EleutherAI/pythia-410m
        revisions: [step1, step512, step143000]
    datasets: [rotten-tomatoes, bbc]   # analyze: an extra text source (optional); metrics: required
    options:                           # keyword options of analyze() / compute_metrics()
      limit: 200
      tasks: offline

Every (model, revision, dataset) is one :class:`Unit`, identified by a hash of its full
configuration, so a unit whose configuration did not change is recognised as done on a rerun.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerscope.errors import LayerscopeError, suggest, unknown

__all__ = ["JOBS", "SweepSpec", "Unit", "load_sweep", "plan"]

#: What a unit runs: ``analyze`` = :func:`layerscope.pipeline.analyze` (metrics, task scores,
#: selection, report); ``metrics`` = :func:`layerscope.metrics.compute.compute_metrics` on a dataset.
JOBS = ("analyze", "metrics")
_TOP_LEVEL = ("job", "out", "models", "revisions", "datasets", "options")
_MODEL_KEYS = ("name", "revisions")
# options a sweep sets itself for every unit
_UNIT_FIELDS = ("model", "revision", "dataset", "out", "progress", "loaded_model", "texts")
# options of the metrics job: the fields of its configurations, and where to cache and whether to report
_METRICS_EXTRA = ("cache_dir", "report")


def _job_options(job: str) -> set[str]:
    """Keyword options a job accepts from a sweep file."""
    if job == "analyze":
        from layerscope.pipeline import analyze

        names = set(inspect.signature(analyze).parameters)
    else:
        import dataclasses

        from layerscope.config import ExtractConfig, MetricsConfig, ModelConfig, TextConfig, ViewConfig

        names = {item.name for cls in (ModelConfig, ExtractConfig, TextConfig, ViewConfig, MetricsConfig)
                 for item in dataclasses.fields(cls) if item.metadata} | set(_METRICS_EXTRA)
    return names - set(_UNIT_FIELDS)


@dataclass(frozen=True)
class Unit:
    """One run of a sweep: a job on one model at one revision with one dataset.

    Attributes
    ----------
    job : str
        One of :data:`JOBS`.
    model : str
        Alias, hub id or local folder.
    revision : str or None
        Hub revision (None: the default branch).
    dataset : str or None
        Text source (None: for ``analyze``, the tasks' own texts only).
    options : tuple of (str, Any)
        The job's keyword options, sorted by name.
    """

    job: str
    model: str
    revision: str | None
    dataset: str | None
    options: tuple[tuple[str, Any], ...] = ()

    def config(self) -> dict[str, Any]:
        """The unit's full configuration (what its id hashes)."""
        return {"job": self.job, "model": self.model, "revision": self.revision, "dataset": self.dataset,
                "options": dict(self.options)}

    @property
    def unit_id(self) -> str:
        """A short stable id: the hash of :meth:`config`."""
        from layerscope.store import run_id_for

        return run_id_for(self.config())

    @property
    def label(self) -> str:
        """``model@revision / dataset`` for tables and logs."""
        name = self.model + (f"@{self.revision}" if self.revision else "")
        return name + (f" / {self.dataset}" if self.dataset else "")

    @property
    def folder(self) -> str:
        """Folder name of the unit's outputs: readable and unique (the id ends it)."""
        readable = "_".join(part for part in (self.model.rstrip("/").split("/")[-1], self.revision, self.dataset)
                            if part)
        safe = "".join(ch if ch.isalnum() or ch in "-_.@" else "-" for ch in readable)[:60]
        return f"{safe}-{self.unit_id}"


@dataclass
class SweepSpec:
    """A validated sweep: the units' common job and options, and what varies.

    Attributes
    ----------
    models : list of (str, list of revisions)
        Each model with its revisions (``[None]``: the default branch).
    datasets : list of str or None
    job : str
    options : dict
    out : pathlib.Path
    """

    models: list[tuple[str, list[str | None]]]
    datasets: list[str | None] = field(default_factory=lambda: [None])
    job: str = "analyze"
    options: dict[str, Any] = field(default_factory=dict)
    out: Path = Path("runs/sweep")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "sweep") -> SweepSpec:
        """Validate a parsed sweep file; every mistake is a one-line error naming ``source``."""
        if not isinstance(data, Mapping):
            raise LayerscopeError(f"{source}: a sweep must be a mapping with 'models' (and job, datasets, options)")
        for key in data:
            if key not in _TOP_LEVEL:
                raise LayerscopeError(f"{source}: unknown key '{key}'{suggest(str(key), _TOP_LEVEL)}; "
                                      f"keys: {', '.join(_TOP_LEVEL)}")
        job = str(data.get("job", "analyze"))
        if job not in JOBS:
            raise unknown(f"job in {source}", job, JOBS)
        common_revisions = _revisions(data.get("revisions"), source)
        models = []
        raw_models = data.get("models")
        if isinstance(raw_models, (str, Mapping)):
            raw_models = [raw_models]
        if not raw_models:
            raise LayerscopeError(f"{source}: 'models' must list at least one model")
        for entry in raw_models:
            if isinstance(entry, str):
                models.append((entry, common_revisions))
            elif isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                for key in entry:
                    if key not in _MODEL_KEYS:
                        raise LayerscopeError(f"{source}: unknown model key '{key}'{suggest(str(key), _MODEL_KEYS)}; "
                                              f"a model is a name or {{name, revisions}}")
                own = _revisions(entry.get("revisions"), source) if "revisions" in entry else common_revisions
                models.append((entry["name"], own))
            else:
                raise LayerscopeError(f"{source}: a model must be a name or {{name: ..., revisions: [...]}}, got {entry!r}")
        datasets = data.get("datasets")
        if isinstance(datasets, str):
            datasets = [datasets]
        datasets = [str(name) for name in datasets] if datasets else [None]
        if job == "metrics" and datasets == [None]:
            raise LayerscopeError(f"{source}: the metrics job needs 'datasets' (the texts to measure)")
        options = data.get("options") or {}
        if not isinstance(options, Mapping):
            raise LayerscopeError(f"{source}: 'options' must be a mapping of keyword options")
        accepted = _job_options(job)
        for key in options:
            if key not in accepted:
                raise LayerscopeError(f"{source}: the {job} job has no option '{key}'{suggest(str(key), accepted)}")
        out = Path(str(data.get("out", "runs/sweep"))).expanduser()
        return cls(models=models, datasets=datasets, job=job, options=dict(options), out=out)

    def units(self) -> list[Unit]:
        """Every (model, revision, dataset), in file order, without duplicates."""
        options = tuple(sorted((str(key), _frozen(value)) for key, value in self.options.items()))
        units = [Unit(self.job, model, revision, dataset, options)
                 for model, revisions in self.models for revision in revisions for dataset in self.datasets]
        return list(dict.fromkeys(units))


def _frozen(value: Any) -> Any:
    """Lists (from YAML) as tuples, so units hash; JSON round trips keep the values comparable."""
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((str(key), _frozen(item)) for key, item in value.items()))
    return value


def _revisions(value: Any, source: str) -> list[str | None]:
    if value is None:
        return [None]
    if isinstance(value, (str, int)):
        value = [value]
    if not isinstance(value, Sequence) or not value:
        raise LayerscopeError(f"{source}: 'revisions' must be a name or a non-empty list of names")
    return [None if item in (None, "main", "default") else str(item) for item in value]


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file (``.yaml``/``.yml`` or ``.json``).

    Raises
    ------
    LayerscopeError
        Missing or unparseable file, or an invalid sweep (one line naming the problem).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise LayerscopeError(f"sweep file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)  # safe_load: a sweep file never constructs Python objects
    except Exception as error:  # noqa: BLE001 - any parse failure is one line for the user
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LayerscopeError(f"cannot parse sweep file {path}: {first}") from None
    return SweepSpec.from_dict(data, source=path.name)


def plan(spec: SweepSpec | str | Path) -> list[Unit]:
    """The units of a sweep (from a spec or a sweep file)."""
    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    return spec.units()
