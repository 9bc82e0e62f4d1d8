"""Results store (DuckDB) and atomic artifacts: round trip, idempotence, transactions, faults, merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layerscope.errors import LayerscopeError
from layerscope.store import (
    STORE_FILENAME,
    ResultsStore,
    atomic_open,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    merge_stores,
    run_id_for,
)

CONFIG = {"model": "tiny", "revision": "main", "dataset": "bundled", "metrics": ["dime", "prompt_entropy"]}


def metrics_frame(n_layers: int = 4, offset: float = 0.0) -> pd.DataFrame:
    rows = []
    for layer in range(n_layers):
        for metric in ("dime", "prompt_entropy"):
            rows.append(
                {
                    "layer": layer,
                    "depth_pct": 100.0 * layer / (n_layers - 1),
                    "metric": metric,
                    "normalization": "maxEntropy",
                    "value": offset + layer * 0.1 + (metric == "dime"),
                    "n_used": 10,
                    "n_skipped": 1,
                    "dataset": "bundled",
                }
            )
    return pd.DataFrame(rows)


def scores_frame(n_layers: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": list(range(n_layers)),
            "depth_pct": [100.0 * layer / (n_layers - 1) for layer in range(n_layers)],
            "task": "sts-lee",
            "task_type": "STS",
            "main_score": np.linspace(0.2, 0.5, n_layers),
            "scores": [{"spearman": float(value)} for value in np.linspace(0.2, 0.5, n_layers)],
        }
    )


def prompt_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "prompt_index": [0, 1, 0, 1],
            "metric": "prompt_entropy",
            "value": [0.5, 0.6, 0.4, 0.3],
        }
    )


def test_run_id_is_deterministic_and_order_free() -> None:
    assert run_id_for(CONFIG) == run_id_for(dict(reversed(list(CONFIG.items()))))
    assert run_id_for(CONFIG) != run_id_for({**CONFIG, "revision": "step1"})
    assert len(run_id_for(CONFIG)) == 16


def test_round_trip(tmp_path: Path) -> None:
    with ResultsStore.in_directory(tmp_path / "out") as store:
        run_id = store.begin_run(
            CONFIG, model_id="tiny", revision="main", data_source="bundled", data_hash="abc"
        )
        assert store.write_metrics(run_id, metrics_frame()) == 8
        store.write_scores(run_id, scores_frame())
        store.write_prompt_values(run_id, prompt_frame())
        store.write_experiment_values(
            run_id,
            pd.DataFrame(
                {
                    "experiment": "repetition",
                    "condition": "p=0.5",
                    "layer": [0, 1],
                    "key": "entropy",
                    "value": [1.0, 2.0],
                }
            ),
        )
        store.finish_run(run_id, skipped={"empty_prompts": 2})
    assert (tmp_path / "out" / STORE_FILENAME).is_file()

    with ResultsStore(tmp_path / "out", read_only=True) as store:
        runs = store.runs()
        assert runs["run_id"].tolist() == [run_id]
        run = runs.iloc[0]
        assert run["status"] == "finished" and run["model_id"] == "tiny" and run["data_hash"] == "abc"
        assert json.loads(run["skipped"]) == {"empty_prompts": 2}
        assert run["finished_at"] >= run["created_at"]
        assert store.run_config(run_id) == json.loads(json.dumps(CONFIG))
        assert store.latest_run_id() == run_id

        metrics = store.metrics(run_id)
        expected = metrics_frame().sort_values(["metric", "layer"]).reset_index(drop=True)
        assert len(metrics) == len(expected)
        for column in ("layer", "metric", "normalization", "n_used", "dataset"):
            assert metrics[column].tolist() == expected[column].tolist()
        np.testing.assert_allclose(metrics["value"], expected["value"])

        scores = store.scores(run_id)
        assert json.loads(scores["scores"].iloc[1])["spearman"] == pytest.approx(0.3)
        assert store.prompt_values(run_id, layer=1)["value"].tolist() == [0.4, 0.3]
        assert store.experiment_values(experiment="repetition")["value"].tolist() == [1.0, 2.0]
        assert store.metrics(run_id, metric="dime")["metric"].unique().tolist() == ["dime"]
        with pytest.raises(LayerscopeError, match="read-only"):
            store.write_metrics(run_id, metrics_frame())


def test_same_config_replaces_rows(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / STORE_FILENAME) as store:
        first = store.write_run(
            CONFIG, metrics=metrics_frame(), scores=scores_frame(), prompt_values=prompt_frame()
        )
        second = store.write_run(CONFIG, metrics=metrics_frame(offset=5.0), scores=scores_frame())
        assert first == second
        assert len(store.runs()) == 1
        assert len(store.metrics()) == 8
        assert store.metrics()["value"].min() >= 5.0  # the new values, not the old ones
        assert len(store.scores()) == 4
        assert store.prompt_values().empty  # the re-run wrote none: nothing stale survives
        other = store.write_run({**CONFIG, "revision": "step1"}, metrics=metrics_frame())
        assert other != first
        assert len(store.metrics()) == 16
        assert len(store.metrics(first)) == 8
        store.write_metrics(first, metrics_frame(n_layers=2), replace=False)
        assert len(store.metrics(first)) == 12


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / STORE_FILENAME) as store:
        run_id = store.write_run(CONFIG, metrics=metrics_frame())
        bad = metrics_frame().astype({"value": object})
        bad.loc[3, "value"] = "not a number"
        with pytest.raises(LayerscopeError, match="cannot store layer_metrics: Conversion Error"):
            store.write_metrics(run_id, bad)  # delete + failing insert in one transaction
        assert len(store.metrics(run_id)) == 8
        with pytest.raises(RuntimeError), store.transaction():
            store.write_metrics(run_id, metrics_frame(n_layers=2))
            store.delete_run(run_id)
            raise RuntimeError("interrupted")
        assert len(store.metrics(run_id)) == 8
        assert store.runs()["status"].tolist() == ["finished"]


def test_bad_input_gives_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LayerscopeError, match="no results database"):
        ResultsStore(tmp_path / "missing.duckdb", read_only=True)
    with ResultsStore(tmp_path / STORE_FILENAME) as store:
        with pytest.raises(LayerscopeError, match="unknown run"):
            store.write_metrics("0123456789abcdef", metrics_frame())
        run_id = store.begin_run(CONFIG)
        with pytest.raises(LayerscopeError, match="missing column"):
            store.write_metrics(run_id, metrics_frame().drop(columns="value"))
        with pytest.raises(LayerscopeError, match="unknown run status"):
            store.finish_run(run_id, status="done")
    store.close()  # idempotent
    with pytest.raises(LayerscopeError, match="closed"):
        store.runs()


def test_run_info_is_one_set_of_keywords(tmp_path: Path) -> None:
    # begin_run, run and write_run take the run's searchable copies as RunInfo keywords: stored alike
    info = {"model_id": "org/tiny", "revision": "step1", "data_source": "bbc", "data_hash": "abc"}
    with ResultsStore(tmp_path / STORE_FILENAME) as store:
        written = store.write_run({"how": "write_run"}, metrics=metrics_frame(), **info)
        with store.run({"how": "run"}, **info) as run:
            run.write_metrics(metrics_frame())
        runs = store.runs().set_index("run_id")
        for run_id in (written, run.run_id):
            assert runs.loc[run_id, list(info)].to_dict() == info
        with pytest.raises(TypeError, match=r"^write_run\(\) got an unexpected keyword argument 'model'$"):
            store.write_run({"how": "misspelt"}, metrics=metrics_frame(), model="org/tiny")
        with pytest.raises(TypeError, match=r"^begin_run\(\) got an unexpected keyword argument 'hash'$"):
            store.begin_run({"how": "misspelt"}, hash="abc")
        assert len(store.runs()) == 2  # a misspelt keyword registers no run


_WRITER = textwrap.dedent(
    """
    import sys
    import pandas as pd
    from layerscope.store import ResultsStore

    store = ResultsStore(sys.argv[1])
    run_id = store.begin_run({"killed": True})
    batch = pd.DataFrame({"layer": range(100), "metric": "m", "value": 1.0})
    for index in range(100000):
        store.write_metrics(run_id, batch, replace=False)
        if index == 2:
            print("committed", flush=True)
    """
)


def test_killed_writer_leaves_readable_database(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILENAME
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "committed", process.stderr.read()  # type: ignore[union-attr]
        time.sleep(0.2)  # let it get well into later transactions
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    with ResultsStore(path, read_only=True) as store:
        runs = store.runs()
        assert runs["status"].tolist() == ["running"]
        rows = len(store.metrics())
        assert rows >= 300 and rows % 100 == 0  # whole transactions only


def test_second_writer_process_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILENAME
    code = (
        "import sys\nfrom layerscope.store import ResultsStore\nfrom layerscope.errors import LayerscopeError\n"
        "try:\n    ResultsStore(sys.argv[1])\nexcept LayerscopeError as e:\n    print(e)\n"
    )
    with ResultsStore(path):
        result = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
        )
    assert "cannot open results database" in result.stdout, result.stderr


def test_merge_stores(tmp_path: Path) -> None:
    sources = []
    for revision in ("step1", "step2"):
        directory = tmp_path / revision
        with ResultsStore.in_directory(directory) as store:
            store.write_run(
                {**CONFIG, "revision": revision},
                metrics=metrics_frame(),
                scores=scores_frame(),
                revision=revision,
            )
        sources.append(directory)
    target = tmp_path / "merged" / STORE_FILENAME
    merged = merge_stores(target, sources)
    assert len(merged) == 2
    merge_stores(target, sources)  # again: replaced, not duplicated
    with ResultsStore(target) as store:
        assert sorted(store.runs()["revision"]) == ["step1", "step2"]
        assert len(store.metrics()) == 16
        assert len(store.scores()) == 8
    assert merge_stores(target, sources[:1], on_conflict="skip") == []
    with pytest.raises(LayerscopeError, match="already exist"):
        merge_stores(target, sources[:1], on_conflict="error")
    with pytest.raises(LayerscopeError, match="no results database"):
        merge_stores(target, [tmp_path / "nowhere.duckdb"])
    assert merge_stores(target, [target]) == []  # the target itself is skipped


def test_atomic_artifacts(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.html"
    atomic_write_text(target, "<html>v1</html>")
    assert target.read_text() == "<html>v1</html>"
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("<html>half")
        raise RuntimeError("killed")
    assert target.read_text() == "<html>v1</html>"
    assert sorted(path.name for path in target.parent.iterdir()) == ["report.html"]
    with atomic_path(tmp_path / "plot.png") as temporary:
        assert temporary.suffix == ".png" and temporary.parent == tmp_path
        temporary.write_bytes(b"\x89PNG")
    assert (tmp_path / "plot.png").read_bytes() == b"\x89PNG"
    atomic_write_json(tmp_path / "config.json", {"b": 1, "a": Path("x")})
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": "x", "b": 1}
    # shared artifacts get the mode a plain open() would give, not mkstemp's owner-only 0600
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)
