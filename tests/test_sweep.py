"""Sweeps (SPEC section 8): sweep files, units, the local and Ray backends, resume and merge."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import layerscope as ls
from layerscope.models.tiny import tiny_model
from layerscope.store import ResultsStore
from layerscope.sweep import SweepSpec, load_sweep, run_sweep, unit_status
from layerscope.sweep import runner as sweep_runner

TEXTS = [
    "The committee approved the new budget after a long debate.",
    "Researchers found that intermediate layers give better embeddings.",
    "She walked to the station and waited for the late train.",
    "Markets fell sharply on Monday as investors weighed the news.",
    "The team won the final after a dramatic penalty shoot-out.",
    "A new vaccine trial reported promising early results.",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Two tiny random-init models saved as local folders (what a sweep file names)."""
    root = tmp_path_factory.mktemp("models")
    folders = {}
    for family, layers in (("llama", 2), ("gpt_neox", 3)):
        model = tiny_model(family, num_layers=layers)
        folder = root / family
        model.model.save_pretrained(str(folder))
        model.tokenizer.save_pretrained(str(folder))
        folders[family] = str(folder)
    return folders


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return str(path)


def metrics_sweep(models: dict[str, str], dataset: str, out: Path, **extra) -> SweepSpec:
    return SweepSpec.from_dict({
        "job": "metrics", "out": str(out), "models": [models["llama"], models["gpt_neox"]], "datasets": [dataset],
        "options": {"metrics": "prompt_entropy,dataset_entropy,curvature", "max_length": 32, "report": False,
                    **extra},
    })


# ------------------------------------------------------------------------------------ sweep files


def test_sweep_file_expands_into_units(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "job: analyze\nout: runs/x\nmodels:\n  - smollm2-135m\n"
        "  - name: EleutherAI/pythia-410m\n    revisions: [step1, step143000]\n"
        "datasets: [bbc, lee]\noptions:\n  limit: 50\n  tasks: [LeeDocumentSTS]\n"
    )
    spec = load_sweep(path)
    units = spec.units()
    assert [(u.model, u.revision, u.dataset) for u in units] == [
        ("smollm2-135m", None, "bbc"), ("smollm2-135m", None, "lee"),
        ("EleutherAI/pythia-410m", "step1", "bbc"), ("EleutherAI/pythia-410m", "step1", "lee"),
        ("EleutherAI/pythia-410m", "step143000", "bbc"), ("EleutherAI/pythia-410m", "step143000", "lee"),
    ]
    assert len({u.unit_id for u in units}) == len(units) and len({u.folder for u in units}) == len(units)
    assert units[0].config()["options"] == {"limit": 50, "tasks": ("LeeDocumentSTS",)}
    # the id is a function of the configuration only: the same file gives the same ids, an option changes them
    assert [u.unit_id for u in load_sweep(path).units()] == [u.unit_id for u in units]
    changed = SweepSpec.from_dict({"models": ["smollm2-135m"], "datasets": ["bbc"], "options": {"limit": 51}})
    assert changed.units()[0].unit_id != units[0].unit_id
    # JSON works too; "main" is the default branch
    json_path = tmp_path / "sweep.json"
    json_path.write_text(json.dumps({"models": ["m"], "revisions": ["main", "step1"]}))
    assert [(u.revision, u.dataset) for u in load_sweep(json_path).units()] == [(None, None), ("step1", None)]


@pytest.mark.parametrize(("data", "message"), [
    ({"modles": ["a"]}, "unknown key 'modles' (did you mean 'models'?)"),
    ({"models": []}, "'models' must list at least one model"),
    ({"models": ["a"], "job": "analyse"}, "unknown job in sweep 'analyse' (did you mean 'analyze'?)"),
    ({"models": ["a"], "job": "metrics"}, "the metrics job needs 'datasets'"),
    ({"models": ["a"], "options": {"limits": 3}}, "the analyze job has no option 'limits' (did you mean 'limit'?)"),
    ({"models": ["a"], "job": "metrics", "datasets": ["bbc"], "options": {"tasks": "offline"}},
     "the metrics job has no option 'tasks'"),
    ({"models": [{"name": "a", "revision": "x"}]}, "unknown model key 'revision' (did you mean 'revisions'?)"),
    ({"models": [3]}, "a model must be a name or"),
    (["a"], "a sweep must be a mapping"),
])
def test_bad_sweep_files_give_one_line_errors(data, message):
    with pytest.raises(ls.LayerscopeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        SweepSpec.from_dict(data)


def test_unreadable_sweep_files(tmp_path):
    with pytest.raises(ls.LayerscopeError, match="sweep file not found"):
        load_sweep(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [a\n")
    with pytest.raises(ls.LayerscopeError, match="cannot parse sweep file") as error:
        load_sweep(broken)
    assert "\n" not in str(error.value)
    python_object = tmp_path / "object.yaml"
    python_object.write_text("models: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ls.LayerscopeError, match="cannot parse sweep file"):  # safe_load never runs code
        load_sweep(python_object)


# ------------------------------------------------------------------------------------ local backend


def test_local_sweep_runs_each_unit_merges_and_resumes(models, dataset, tmp_path, monkeypatch):
    spec = metrics_sweep(models, dataset, tmp_path / "sweep")
    result = run_sweep(spec, progress=False)
    assert list(result.units["status"]) == ["done", "done"]
    with ResultsStore.in_directory(result.out, read_only=True) as store:
        runs = store.runs()
        merged = store.metrics()
    assert len(runs) == 2 and set(runs["status"]) == {"finished"}
    assert sorted(result.merged_runs) == sorted(runs["run_id"])
    # the merged database holds exactly each unit's own rows
    for folder in result.units["folder"]:
        with ResultsStore.in_directory(folder, read_only=True) as store:
            own = store.metrics()
        (run_id,) = set(own["run_id"])
        key = ["metric", "normalization", "layer"]
        mine = merged[merged["run_id"] == run_id].sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(own.sort_values(key).reset_index(drop=True)[key + ["value"]], mine[key + ["value"]],
                                      check_exact=True)  # rows copied from database to database: exact
    # the values are those of compute_metrics on the same model and texts
    run_of = dict(zip(runs["model_id"], runs["run_id"], strict=True))
    direct = ls.compute_metrics(ls.load_model(models["gpt_neox"]), TEXTS, metrics="dataset_entropy", max_length=32,
                                progress=False)
    ours = merged[(merged["run_id"] == run_of[models["gpt_neox"]]) & (merged["metric"] == "dataset_entropy")]
    key = ["normalization", "layer"]
    np.testing.assert_allclose(ours.sort_values(key)["value"].to_numpy(), direct.sort_values(key)["value"].to_numpy(),
                               rtol=1e-12)
    assert (result.out / "compare.html").is_file() and (result.out / "sweep.json").is_file()

    # a rerun skips both units (nothing runs), and the merged store is the same
    calls = []
    monkeypatch.setattr(sweep_runner, "run_unit", lambda *args, **kwargs: calls.append(args))
    again = run_sweep(spec, progress=False)
    assert calls == [] and list(again.units["status"]) == ["skipped", "skipped"]
    assert sorted(again.merged_runs) == sorted(result.merged_runs)
    # resume=False reruns every unit
    monkeypatch.undo()
    forced = run_sweep(spec, progress=False, resume=False)
    assert list(forced.units["status"]) == ["done", "done"]


def test_a_failing_unit_is_recorded_and_retried(models, dataset, tmp_path):
    spec = SweepSpec.from_dict({"job": "metrics", "models": [models["llama"], str(tmp_path / "no-such-model")],
                                "datasets": [dataset], "options": {"metrics": "dataset_entropy", "report": False}})
    result = run_sweep(spec, out=tmp_path / "sweep", progress=False)
    assert list(result.units["status"]) == ["done", "failed"]
    error = result.failed.iloc[0]["error"]
    assert "no-such-model" in error and "\n" not in error
    status = unit_status(spec.units()[1], tmp_path / "sweep")
    assert status is not None and status["status"] == "failed"
    with ResultsStore.in_directory(tmp_path / "sweep", read_only=True) as store:
        assert len(store.runs()) == 1  # only the finished unit is merged
    # the next run retries the failed unit only
    again = run_sweep(spec, out=tmp_path / "sweep", progress=False)
    assert list(again.units["status"]) == ["skipped", "failed"]


def test_analyze_job_writes_a_full_analysis_per_unit(models, tmp_path):
    spec = SweepSpec.from_dict({"models": [models["llama"]], "options": {
        "tasks": ["LeeDocumentSTS"], "metrics": "dataset_entropy,dime", "n_views": 2, "view_texts": 8,
        "lidar_texts": 2, "max_length": 32, "report": False}})
    result = run_sweep(spec, out=tmp_path / "sweep", progress=False)
    row = result.units.iloc[0]
    assert row["status"] == "done", row["error"]
    with ResultsStore.in_directory(tmp_path / "sweep", read_only=True) as store:
        scores = store.scores()
    assert set(scores["task"]) == {"LeeDocumentSTS"} and set(scores["layer"]) == {0, 1, 2}
    # the unit's best layer is the stored scores' argmax (one task: its score is the average)
    assert scores["main_score"].nunique() == 3  # no tie, so the argmax is one layer
    assert row["best_layer"] == int(scores.loc[scores["main_score"].idxmax(), "layer"])
    assert scores["run_id"].nunique() == 1  # one analysis run per unit


def test_unknown_backend(models, dataset, tmp_path):
    with pytest.raises(ls.LayerscopeError, match="unknown sweep backend 'slurm'"):
        run_sweep(metrics_sweep(models, dataset, tmp_path), backend="slurm")


# ------------------------------------------------------------------------------------ Ray backend


@pytest.mark.slow
def test_ray_backend_gives_the_local_results(models, dataset, tmp_path):
    pytest.importorskip("ray")
    local = run_sweep(metrics_sweep(models, dataset, tmp_path / "local"), progress=False)
    remote = run_sweep(metrics_sweep(models, dataset, tmp_path / "ray"), backend="ray", num_cpus=2,
                       progress=False)
    assert list(remote.units["status"]) == ["done", "done"]
    # same units, same run ids (the configuration is the same) and the same values
    assert sorted(remote.merged_runs) == sorted(local.merged_runs)
    with ResultsStore.in_directory(local.out, read_only=True) as a, ResultsStore.in_directory(remote.out, read_only=True) as b:
        key = ["run_id", "metric", "normalization", "layer"]
        left = a.metrics().sort_values(key).reset_index(drop=True)
        right = b.metrics().sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(left["value"].to_numpy(), right["value"].to_numpy(), rtol=1e-6)
    # the units ran in Ray worker processes, not in this one
    statuses = [json.loads((Path(folder) / "unit.json").read_text()) for folder in remote.units["folder"]]
    assert all(status["status"] == "done" and status["pid"] != os.getpid() for status in statuses)
    local_statuses = [json.loads((Path(folder) / "unit.json").read_text()) for folder in local.units["folder"]]
    assert all(status["pid"] == os.getpid() for status in local_statuses)
