"""Interrupted evaluations: Ctrl-C stops at once, and a rerun evaluates only what was not finished.

Two task files (a classification and an STS task) on a tiny model: the point scores and the bootstrap
are interrupted after some units (directly and through ``analyze``), rerun, and compared with an
uninterrupted run; the keys follow what the scores read (a changed label, other embeddings, other
settings) and nothing else; a damaged unit is recomputed; the evaluation workers are stopped, not
awaited.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mteb")
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")

from layerscope.evaluate import evaluate_layers, resolve, runner, uncertainty  # noqa: E402
from layerscope.evaluate.checkpoint import UnitCheckpoints, layer_digests, task_digest  # noqa: E402
from layerscope.evaluate.runner import _load, collect_texts  # noqa: E402
from layerscope.extract import extract  # noqa: E402
from layerscope.models.tiny import tiny_model  # noqa: E402

N_RESAMPLES = 4
_REAL = {"_evaluate_unit": uncertainty._evaluate_unit, "_score_layer": runner._score_layer}
SPLIT = {"split_column": "split"}


def _topics() -> pd.DataFrame:
    nouns = {"animal": ["cat", "dog", "horse", "wolf"], "vehicle": ["train", "car", "bus", "ferry"],
             "food": ["bread", "soup", "mango", "rice"]}
    rows = [{"text": f"The {noun} was seen {place}.", "label": label, "split": "train" if i < 2 else "test"}
            for label, names in nouns.items() for noun in names for i, place in enumerate(["at dawn", "at noon", "late"])]
    return pd.DataFrame(rows)


def _similarity() -> pd.DataFrame:
    return pd.DataFrame({"sentence1": ["The cat sleeps.", "A dog barks.", "The train is late.", "Fresh bread.",
                                       "A red car.", "Soup is hot."],
                         "sentence2": ["A kitten naps.", "The car honks.", "The bus is late.", "Warm bread.",
                                       "A blue truck.", "A cold drink."],
                         "score": [4.6, 0.8, 3.9, 4.2, 3.1, 1.4]})


def _files(folder, topics: pd.DataFrame | None = None) -> list:
    """The two task files, written to ``folder``."""
    folder.mkdir(exist_ok=True)
    (topics if topics is not None else _topics()).to_csv(folder / "topics.csv", index=False)
    _similarity().to_csv(folder / "similarity.csv", index=False)
    return [folder / "topics.csv", folder / "similarity.csv"]


def _tasks(folder, topics: pd.DataFrame | None = None) -> list:
    tasks = resolve(_files(folder, topics), files=SPLIT)
    _load(tasks)
    return tasks


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Tasks, embeddings, point scores and an uninterrupted bootstrap kept nowhere."""
    model = tiny_model("llama")
    tasks = _tasks(tmp_path_factory.mktemp("files"))
    extraction = extract(model, collect_texts(tasks), progress=False)
    scores = evaluate_layers(model, tasks, extraction=extraction, progress=False, eval_workers=1)
    plain = uncertainty.bootstrap_layers(scores, extraction, tasks, n_resamples=N_RESAMPLES, progress=False,
                                         eval_workers=1)
    return tasks, extraction, scores, plain, model


def _resamples(boot: pd.DataFrame) -> dict[tuple[int, str], list[float]]:
    return {(int(row.layer), row.task): json.loads(row.scores)["bootstrap"]["main_scores"] for row in boot.itertuples()}


class _Counting:
    """A unit function (``_evaluate_unit`` by default) counting its calls; Ctrl-C on call ``stop_at`` + 1."""

    def __init__(self, monkeypatch, stop_at: int | None = None, module=uncertainty, name="_evaluate_unit") -> None:
        self.calls, self.stop_at, self.real = 0, stop_at, _REAL[name]
        monkeypatch.setattr(module, name, self)

    def __call__(self, unit):
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.calls += 1
        return self.real(unit)


def _boot(run, folder):
    tasks, extraction, scores = run[:3]
    return uncertainty.bootstrap_layers(scores, extraction, tasks, n_resamples=N_RESAMPLES, progress=False,
                                        eval_workers=1, cache_dir=folder)


def test_interrupted_bootstrap_resumes_where_it_stopped(run, tmp_path, monkeypatch) -> None:
    plain = run[3]
    units = len(plain)  # one row per (layer, task)
    _Counting(monkeypatch, stop_at=5)
    with pytest.raises(KeyboardInterrupt):
        _boot(run, tmp_path)
    assert len(list((tmp_path / "bootstrap").glob("*.npz"))) == 5  # each finished unit kept as it finished
    counting = _Counting(monkeypatch)
    resumed = _boot(run, tmp_path)
    assert counting.calls == units - 5 and resumed.attrs["bootstrap"]["units_kept"] == 5
    # the same evaluations on one thread in this process, and float64 kept exactly: 1e-12 is rounding
    got, want = _resamples(resumed), _resamples(plain)
    assert got.keys() == want.keys()
    for unit, values in want.items():
        assert got[unit] == pytest.approx(values, abs=1e-12), unit
    assert resumed["main_score"].tolist() == plain["main_score"].tolist()
    # a third run finds every unit
    again = _Counting(monkeypatch)
    _boot(run, tmp_path)
    assert again.calls == 0


def test_damaged_unit_is_said_and_recomputed(run, tmp_path, monkeypatch, caplog) -> None:
    _boot(run, tmp_path)
    damaged = sorted((tmp_path / "bootstrap").glob("*.npz"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    counting = _Counting(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="layerscope.evaluate.checkpoint"):
        resumed = _boot(run, tmp_path)
    assert counting.calls == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"cache entry {damaged.stem} was damaged ({damaged.name} is unreadable: ")
    assert line.endswith("): recomputing") and "\n" not in line
    for unit, values in _resamples(run[3]).items():
        assert _resamples(resumed)[unit] == pytest.approx(values, abs=1e-12), unit


def test_interrupted_scoring_resumes_where_it_stopped(run, tmp_path, monkeypatch) -> None:
    tasks, extraction, scores, _, model = run
    n_layers = len(extraction.layers)

    def score(folder):
        return evaluate_layers(model, tasks, extraction=extraction, progress=False, eval_workers=1,
                               cache_dir=str(folder))

    _Counting(monkeypatch, stop_at=2, module=runner, name="_score_layer")
    with pytest.raises(KeyboardInterrupt):
        score(tmp_path)
    assert len(list((tmp_path / "scores").glob("*.npz"))) == 2
    counting = _Counting(monkeypatch, module=runner, name="_score_layer")
    resumed = score(tmp_path)
    assert counting.calls == n_layers - 2 and resumed.attrs["record"]["layers_kept"] == 2
    columns = ["layer", "depth_pct", "task", "task_type"]
    assert resumed[columns].equals(scores[columns])
    # kept as JSON (floats written as repr: exact) or evaluated again by the same code here: 1e-12 is rounding
    assert resumed["main_score"].tolist() == pytest.approx(scores["main_score"].tolist(), abs=1e-12)
    assert [json.loads(x).keys() for x in resumed["scores"]] == [json.loads(x).keys() for x in scores["scores"]]
    # another seed is another evaluation: nothing read back
    other = evaluate_layers(model, tasks, extraction=extraction, progress=False, eval_workers=1, seed=7,
                            cache_dir=str(tmp_path))
    assert other.attrs["record"]["layers_kept"] == 0


def test_analyze_resumes_an_interrupted_bootstrap(tmp_path, monkeypatch) -> None:
    from layerscope.pipeline import analyze

    model = tiny_model("llama", num_layers=2)
    options = dict(loaded_model=model, tasks=[str(path) for path in _files(tmp_path / "files")], task_files=SPLIT, n_views=2, view_texts=8, lidar_texts=4,
                   max_length=32, progress=False, report=False, eval_workers=1, bootstrap=N_RESAMPLES,
                   cache_dir=str(tmp_path / "cache"))
    _Counting(monkeypatch, stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        analyze(out=tmp_path / "first", **options)
    layers = _Counting(monkeypatch, module=runner, name="_score_layer")
    units = _Counting(monkeypatch)
    resumed = analyze(out=tmp_path / "again", **options)
    assert layers.calls == 0  # every layer's point scores were kept before the bootstrap began
    assert units.calls == len(resumed.scores) - 3
    assert resumed.record["kept"] == {"layers": len(resumed.scores["layer"].unique()), "bootstrap_units": 3}
    plain = analyze(out=tmp_path / "plain", **{**options, "cache_dir": None})
    assert _resamples(resumed.scores).keys() == _resamples(plain.scores).keys()
    for unit, values in _resamples(plain.scores).items():
        assert _resamples(resumed.scores)[unit] == pytest.approx(values, abs=1e-12), unit


def test_keys_follow_what_the_scores_read(run, tmp_path) -> None:
    tasks, extraction = run[:2]
    rebuilt = _tasks(tmp_path / "same")
    assert [task_digest(t) for t in rebuilt] == [task_digest(t) for t in tasks]  # same files: same keys
    flipped = _topics()
    test_row = flipped.index[flipped["split"] == "test"][0]
    flipped.loc[test_row, "label"] = "food" if flipped.loc[test_row, "label"] != "food" else "animal"
    changed = _tasks(tmp_path / "flipped", flipped)
    assert task_digest(changed[0]) != task_digest(tasks[0])  # one test label
    assert task_digest(changed[1]) == task_digest(tasks[1])  # the other task did not change
    # embeddings: one value of one row of one layer
    pooled = np.array(extraction.pooled)
    layers = layer_digests(extraction.texts, pooled)
    assert len(set(layers)) == len(layers)
    pooled[1, 0, 0] = np.nextafter(pooled[1, 0, 0], np.float32(np.inf))
    moved = layer_digests(extraction.texts, pooled)
    assert moved[1] != layers[1] and moved[:1] + moved[2:] == layers[:1] + layers[2:]
    assert layer_digests(list(reversed(extraction.texts)), np.array(extraction.pooled))[0] != layers[0]  # row order
    # run settings
    keys = {UnitCheckpoints(tmp_path, "bootstrap", settings).key("layer", "task")
            for settings in ({"seed": None}, {"seed": 1}, {"seed": None, "n_resamples": 5})}
    assert len(keys) == 3


def test_task_digest_reads_row_mappings_and_refuses_unknown_data(run) -> None:
    task = run[0][1]  # the STS task: one test split

    class Opaque:
        pass

    before, digest = task.dataset, task_digest(task)
    test = before["test"]
    try:
        task.dataset = {**before, "test": test.select(range(1, len(test)))}  # all rows but the first
        fewer_rows = task_digest(task)
        task.dataset = {**before, "test": test.select(range(len(test) - 1, -1, -1))}  # a row mapping: reversed
        reversed_rows = task_digest(task)
        task.dataset = {**before, "extra": Opaque()}
        assert task_digest(task) is None  # not kept rather than keyed on part of what the scores read
    finally:
        task.dataset = before
    assert len({digest, fewer_rows, reversed_rows}) == 3 and task_digest(task) == digest


def test_no_folder_keeps_nothing(tmp_path) -> None:
    store = UnitCheckpoints(None, "bootstrap", {})
    store.save("k", [0.5])
    assert store.load("k") is None
    kept = UnitCheckpoints(tmp_path / "units", "bootstrap", {})
    kept.save("k", [0.25, 0.75])
    assert kept.load("k").tolist() == [0.25, 0.75]  # float64 written and read back: exact


def _sleepy(item: tuple[int, str]) -> int:
    """Item 0 returns at once; the others note their worker's pid, take 20 s and then leave a marker file."""
    index, folder = item
    if index:
        (Path(folder) / f"{index}.pid").write_text(str(os.getpid()))
        time.sleep(20)
        (Path(folder) / f"{index}.done").touch()
    return index


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="workers are forked")
def test_ctrl_c_stops_the_workers_instead_of_waiting_for_them(tmp_path) -> None:
    def interrupt(item, result):  # Ctrl-C arriving as the first item finishes, once another one runs
        for _ in range(200):
            if list(tmp_path.glob("*.pid")):
                break
            time.sleep(0.05)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.fork_map(_sleepy, [(i, str(tmp_path)) for i in range(6)], 2, interrupt)
    # the running items were stopped, not awaited: their workers are gone and none ran on to its end
    pids = {int(path.read_text()) for path in tmp_path.glob("*.pid")}
    assert pids and not any(_alive(pid) for pid in pids)
    time.sleep(0.5)
    assert not list(tmp_path.glob("*.done"))


def test_a_folder_that_cannot_be_written_is_said_once(tmp_path, caplog) -> None:
    (tmp_path / "file").write_text("not a folder")
    store = UnitCheckpoints(tmp_path / "file" / "units", "bootstrap", {})
    with caplog.at_level(logging.WARNING, logger="layerscope.evaluate.checkpoint"):
        store.save("a", [0.5])
        store.save("b", [0.5])  # not tried again
    (line,) = [record.getMessage() for record in caplog.records]
    assert line.startswith(f"could not keep a finished bootstrap unit in {tmp_path / 'file' / 'units'} (")
    assert line.endswith("): an interrupted run will redo it")
    assert store.load("a") is None
