"""Recipes in analyze, the report and the recipe record (issue 23, points 3 and 4)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layerscope.analysis.recipe_runs import auto_recipe_set, resolve_recipes
from layerscope.analysis.recipes import parse_recipe_set
from layerscope.errors import LayerscopeError

REPO = Path(__file__).resolve().parents[1]
#: Two recipe sets as a user writes them on the command line (one per type; one for all types).
GIVEN = "sts=zmean:0.5-1+standardize;*=last|mean:0.5-1"
SETS = ["sts=zmean:0.5-1+standardize;*=last", "*=mean:0.5-1"]
#: A recipe record whose set beat the last layer held out.
BEATS = {"recipe_set": "classification=mean:0.5-1;*=last+standardize", "beats_last_held_out": True,
         "held_out": {"leave-one-model-out": {"mean_gain": 1.8, "wins": 3, "losses": 0}},
         "trained_on": {"n_models": 3, "models": []}, "command": "python benchmarks/bench_recipes.py a b c"}


def write_record(path: Path, **changes) -> dict:
    """A temporary recipe record, written as the benchmark writes it and read back."""
    path.write_text(json.dumps({**BEATS, **changes}, indent=1) + "\n")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------ --recipes and auto


def test_auto_is_the_recorded_set_only_where_it_beat_the_last_layer_held_out(tmp_path) -> None:
    beats = write_record(tmp_path / "beats.json")
    loses = write_record(tmp_path / "loses.json", beats_last_held_out=False)
    assert auto_recipe_set(beats) == BEATS["recipe_set"]
    assert auto_recipe_set(loses) == auto_recipe_set({}) == "last"
    # the last layer is Table 2's own row: auto then scores nothing more
    assert resolve_recipes(["auto"], record=loses) == []
    (chosen,) = resolve_recipes(["auto"], record=beats)
    assert (chosen.text, chosen.source) == (parse_recipe_set(BEATS["recipe_set"]).text, "auto")
    # a given set equal to auto's is scored once, marked auto; order as given; the plain last layer left out
    chosen = resolve_recipes(["mean:0.5-1", "*=last", BEATS["recipe_set"], "auto"], record=beats)
    assert [(item.text, item.source) for item in chosen] == [("*=mean:0.5-1", "given"),
                                                             (parse_recipe_set(BEATS["recipe_set"]).text, "auto")]


def test_the_shipped_record_is_the_benchmarks_and_auto_follows_its_verdict() -> None:
    from layerscope.config import recipe_record

    record = recipe_record()
    assert record is not None and record["command"].startswith("python benchmarks/bench_recipes.py")
    assert set(record["kinds"]) <= {"language-model", "sentence-encoder"}
    for kind, entry in record["kinds"].items():
        parse_recipe_set(entry["recipe_set"])  # the set it names parses
        assert auto_recipe_set(kind=kind) == (entry["recipe_set"] if entry["beats_last_held_out"] else "last")
    # a kind it holds no model of, or no kind at all: no evidence, the last layer
    assert auto_recipe_set(kind="vision-encoder") == auto_recipe_set() == "last"


def test_auto_follows_the_model_kind(tmp_path) -> None:
    record = write_record(tmp_path / "kinds.json", kinds={
        "language-model": {**BEATS, "models": ["a", "b"]},
        "sentence-encoder": {**BEATS, "recipe_set": "*=last+standardize", "beats_last_held_out": False}})
    assert auto_recipe_set(record, "language-model") == BEATS["recipe_set"]
    assert auto_recipe_set(record, "sentence-encoder") == "last"  # its set lost held out
    assert resolve_recipes(["auto"], record=record, kind="sentence-encoder") == []
    (chosen,) = resolve_recipes(["auto"], record=record, kind="language-model")
    assert chosen.text == parse_recipe_set(BEATS["recipe_set"]).text


def test_recipes_option_splits_on_the_bar_and_bad_sets_are_one_line() -> None:
    from layerscope.config import AnalysisConfig

    assert AnalysisConfig(recipes=GIVEN).recipes == tuple(GIVEN.split("|"))
    assert AnalysisConfig(recipes=" none ").recipes == () and AnalysisConfig().recipes == ("auto",)
    with pytest.raises(LayerscopeError, match=r"^--recipes none cannot be given with other recipe sets"):
        AnalysisConfig(recipes="none|auto")
    with pytest.raises(LayerscopeError, match=r"^--recipes: bad recipe 'zmean:0.9-0.1': use .* A <= B "
                                              r"\(separate recipe sets with \|\)$"):
        resolve_recipes(["last+standardize", "zmean:0.9-0.1"])
    with pytest.raises(LayerscopeError, match=r"^--recipes: unknown task type 'classificaton'"):
        resolve_recipes(["classificaton=last"])
    with pytest.raises(LayerscopeError, match=r"^--recipes auto: the set of recipe_record.json does not parse"):
        resolve_recipes(["auto"], record={"recipe_set": "mean:2-3", "beats_last_held_out": True})


def test_a_bad_recipes_value_is_one_line_before_the_model_loads(tmp_path) -> None:
    from cli_helpers import cli_many

    task = tmp_path / "topics.csv"
    pd.DataFrame({"text": [f"text {i} about {k}" for k in "ab" for i in range(20)],
                  "label": [k for k in "ab" for _ in range(20)]}).to_csv(task, index=False)
    # the model name does not exist: loading it would be another error
    base = ["analyze", "--model", "not-a-model", "--tasks", str(task), "--out", str(tmp_path / "out")]
    results = cli_many([*base, "--recipes", "last+standardize|zmean:0.9-0.1"], [*base, "--recipes", "none|auto"])
    expected = ["error: --recipes: bad recipe 'zmean:0.9-0.1': use last, layer:L",
                "error: --recipes none cannot be given with other recipe sets (none | auto)"]
    for (code, lines), start in zip(results, expected, strict=True):
        assert code == 2 and len(lines) == 1 and lines[0].startswith(start), lines


# ------------------------------------------------------------------------------------------ analyze


mteb = pytest.importorskip("mteb")


def task_files(root: Path) -> list[Path]:
    """A classification and an STS task file (those of tests/test_recipes.py)."""
    words = {"animal": ["cat", "dog", "horse", "wolf"], "food": ["bread", "soup", "mango", "rice"],
             "vehicle": ["train", "car", "bus", "plane"]}
    rows = [{"text": f"The {nouns[i % 4]} number {i} was seen today.", "label": label,
             "split": "train" if i < 12 else "test"} for i in range(16) for label, nouns in words.items()]
    pd.DataFrame(rows).to_csv(root / "topics.csv", index=False)
    pairs = [{"sentence1": f"a {a} and a {b}", "sentence2": f"a {b} or a {c}", "score": float((i * 7) % 5)}
             for i, (a, b, c) in enumerate(zip(words["animal"] * 3, words["food"] * 3, words["vehicle"] * 3,
                                               strict=True))]
    pd.DataFrame(pairs).to_csv(root / "similar.csv", index=False)
    return [root / "topics.csv", root / "similar.csv"]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    """analyze with two given recipe sets on a tiny model, its embedding cache kept to read the same pass back."""
    from layerscope.models.tiny import tiny_model
    from layerscope.pipeline import analyze

    root = tmp_path_factory.mktemp("recipe-run")
    files = task_files(root)
    model = tiny_model("llama")
    result = analyze(loaded_model=model, tasks=[str(file) for file in files], task_files={"split_column": "split"},
                     metrics="prompt_entropy", recipes=GIVEN, out=root / "out", cache_dir=str(root / "cache"),
                     progress=False, eval_workers=1)
    return result, model, root


def the_runs_extraction(result, model, root):
    """The run's own per-layer embeddings, read back from its cache (the same texts and options)."""
    from layerscope.config import ExtractConfig
    from layerscope.evaluate import resolve
    from layerscope.extract import extract
    from layerscope.pipeline import task_texts

    tasks = resolve([root / "topics.csv", root / "similar.csv"], files={"split_column": "split"})
    texts = task_texts(tasks, result.config.eval_seed)
    extraction = extract(model, texts.texts, cache_dir=str(root / "cache"), progress=False,
                         **ExtractConfig().extract_options())
    assert extraction.from_cache  # the very embeddings the run scored
    return tasks, extraction


def test_table2_recipe_rows_equal_the_recipe_scores_of_the_same_pass(recipe_run) -> None:
    from layerscope.analysis.recipes import evaluate_recipes, recipe_set_scores

    result, model, root = recipe_run
    tasks, extraction = the_runs_extraction(result, model, root)
    recipes = list(dict.fromkeys(recipe for text in SETS for recipe in parse_recipe_set(text).recipes))
    scores = evaluate_recipes(extraction, recipes, tasks, eval_workers=1)  # the tiny model ships no Normalize
    table = result.selection.set_index("rule")
    last = table.loc["last layer"]
    for text in SETS:
        want = recipe_set_scores(scores, text)
        row = table.loc[f"recipes: {text}"]
        assert row["kind"] == "recipe" and pd.isna(row["layer"]) and row["n_tasks"] == 2
        # the same per-task scores (same float32 embeddings, same seeded evaluators), averaged in another
        # order: rtol=1e-12 covers the summation order
        np.testing.assert_allclose(row["average"], 100 * want["main_score"].mean(), rtol=1e-12)
        np.testing.assert_allclose(row["gain_vs_last"], row["average"] - last["average"], rtol=1e-12)
        for task_type in ("Classification", "STS"):
            np.testing.assert_allclose(row[task_type], 100 * want.loc[want["task_type"] == task_type,
                                                                      "main_score"].mean(), rtol=1e-12)
    # the recipe rows sit before the metric rules
    kinds = result.selection["kind"].tolist()
    assert kinds.index("recipe") < kinds.index("metric") and kinds[-1] == "metric"


def test_a_window_mean_equals_a_float64_reference_scored_by_mteb(recipe_run) -> None:
    from layerscope.evaluate.runner import main_score
    from mteb_helpers import FixedEncoder

    result, model, root = recipe_run
    tasks, extraction = the_runs_extraction(result, model, root)
    last = model.num_layers  # 3: mean:0.5-1 holds the layers of depth 2/3 and 3/3
    window = [layer for layer in range(last + 1) if layer / last >= 0.5]
    assert window == [2, 3]
    pooled = np.asarray(extraction.pooled, dtype=np.float64)  # (layers, n, d)
    reference = pooled[[extraction.layers.index(layer) for layer in window]].mean(axis=0).astype(np.float32)
    stored = result.summary.recipes.query("recipe_set == '*=mean:0.5-1'").set_index("task")["main_score"]
    encoder = FixedEncoder(list(extraction.texts), reference)
    for task in tasks:
        direct = main_score(mteb.evaluate(encoder, task, cache=None, show_progress_bar=False,
                                          co2_tracker=False).task_results[0].scores)
        # the mean of two float32 values in float64 is exact, so the float32 embeddings are the same bits
        # and the seeded evaluator gives the same score
        assert stored[task.metadata.name] == direct, task.metadata.name


def test_recipe_texts_round_trip_through_the_store_the_record_and_the_report(recipe_run) -> None:
    from layerscope.report.run_report import summarize_run
    from layerscope.store import ResultsStore, load_run

    result, model, root = recipe_run
    out = root / "out"
    with ResultsStore.in_directory(out, read_only=True) as store:
        stored = store.recipe_scores(result.run_id)
    assert list(dict.fromkeys(stored["recipe_set"])) == sorted(SETS) and set(stored["source"]) == {"given"}
    by_type = stored.set_index(["recipe_set", "task_type"])["recipe"]
    assert by_type[(SETS[0], "STS")] == "zmean:0.5-1+standardize" and by_type[(SETS[0], "Classification")] == "last"
    assert [parse_recipe_set(text).text for text in stored["recipe_set"]] == stored["recipe_set"].tolist()
    record = json.loads((out / "record.json").read_text())["recipes"]
    assert record["asked"] == GIVEN.split("|") and record["auto"] is None and record["starts_from"] == "raw layers"
    assert [(item["recipe_set"], item["source"]) for item in record["sets"]] == [(text, "given") for text in SETS]
    assert record["sets"][0]["layers"] == {"STS": [2, 3], "*": [3]}
    run = load_run(out)
    pd.testing.assert_frame_equal(run.recipes.drop(columns="run_id"), stored.drop(columns="run_id"))
    # the report summarises the stored run as analyze did: the same Table 2, recipe rows included
    pd.testing.assert_frame_equal(summarize_run(run, uncertainty=False).selection, result.selection)
    html = (out / "report.html").read_text()
    assert "Recipes vs. the last layer, per task type" in html and f"recipes: {SETS[0]}" in html


def test_the_per_type_table_compares_each_set_with_the_last_layer(recipe_run) -> None:
    result, _, _ = recipe_run
    types = result.summary.recipe_types.set_index(["recipe_set", "task_type"])
    last = result.scores[result.scores["layer"] == result.summary.last_layer].set_index("task_type")["main_score"]
    recipes = result.summary.recipes.set_index(["recipe_set", "task_type"])["main_score"]
    for text in SETS:
        for task_type in ("Classification", "STS"):
            row = types.loc[(text, task_type)]
            # one task per type here: the means are the task's own scores
            assert (row["last"], row["score"]) == (100 * last[task_type], 100 * recipes[(text, task_type)])
            assert row["gain"] == row["score"] - row["last"]
        np.testing.assert_allclose(types.loc[(text, "average"), "score"],
                                   result.selection.set_index("rule").loc[f"recipes: {text}", "average"], rtol=1e-12)


def test_auto_with_a_record_that_beats_the_last_layer_is_the_answer_without_labels(recipe_run, tmp_path,
                                                                                 monkeypatch) -> None:
    import layerscope.config
    from layerscope.analysis import summarize
    from layerscope.analysis.recipe_runs import recipe_headline_text
    from layerscope.pipeline import analyze

    _, model, root = recipe_run
    record = write_record(tmp_path / "recipe_record.json")
    monkeypatch.setattr(layerscope.config, "recipe_record", lambda: record)
    result = analyze(loaded_model=model, tasks=[str(root / "topics.csv"), str(root / "similar.csv")],
                     task_files={"split_column": "split"}, metrics="prompt_entropy", out=tmp_path / "out",
                     cache_dir=str(root / "cache"), progress=False, report=False, eval_workers=1)
    text = parse_recipe_set(BEATS["recipe_set"]).text
    assert result.config.recipes == ("auto",) and result.summary.chosen_recipe == text
    row = result.selection.set_index("rule").loc[f"recipes (auto): {text}"]
    assert recipe_headline_text(result.summary) == (
        f"chosen without labels (recipes auto, held out against the last layer): {text} "
        f"({row['average']:.1f}, {row['gain_vs_last']:+.1f} vs last)")
    auto = json.loads((tmp_path / "out" / "record.json").read_text())["recipes"]["auto"]
    assert (auto["recipe_set"], auto["beats_last_held_out"], auto["held_out_mean_gain"]) == (text, True, 1.8)
    assert auto["from"].startswith("layerscope/analysis/recipe_record.json")
    # another label-free layer rule keeps the headline on its layer; the recipe row stays in Table 2
    other = summarize(result.metrics, result.scores, select_by="depth:0.5", recipe_scores=result.summary.recipes)
    assert other.chosen_recipe is None and recipe_headline_text(other) is None
    assert f"recipes (auto): {text}" in set(other.selection["rule"])
    # a record that does not beat the last layer: auto scores nothing, the answer is the layer
    monkeypatch.setattr(layerscope.config, "recipe_record", lambda: {**record, "beats_last_held_out": False})
    plain = analyze(loaded_model=model, tasks=[str(root / "topics.csv"), str(root / "similar.csv")],
                    task_files={"split_column": "split"}, metrics="prompt_entropy", out=tmp_path / "out",
                    cache_dir=str(root / "cache"), progress=False, report=False, eval_workers=1)
    assert plain.summary.recipes is None and plain.summary.chosen_recipe is None
    assert "recipe" not in set(plain.selection["kind"])
    assert json.loads((tmp_path / "out" / "record.json").read_text())["recipes"]["auto"]["recipe_set"] == "last"
    # a record with kinds: auto is the entry of the model's kind (a sentence encoder's lost: the last layer)
    kinds = {"kinds": {"language-model": {**BEATS, "models": ["a", "b"]},
                       "sentence-encoder": {**BEATS, "beats_last_held_out": False}}, "command": BEATS["command"]}
    monkeypatch.setattr(layerscope.config, "recipe_record", lambda: kinds)
    for kind, expected in (("language-model", text), ("sentence-encoder", "last")):
        monkeypatch.setattr(model, "kind", kind)
        analyze(loaded_model=model, tasks=[str(root / "topics.csv"), str(root / "similar.csv")],
                task_files={"split_column": "split"}, metrics="prompt_entropy", out=tmp_path / "out",
                cache_dir=str(root / "cache"), progress=False, report=False, eval_workers=1)
        auto = json.loads((tmp_path / "out" / "record.json").read_text())["recipes"]["auto"]
        assert (auto["recipe_set"], auto["kind"]) == (expected, kind)


def test_analyze_prints_the_recipe_rows_and_the_per_type_table(recipe_run, tmp_path) -> None:
    """The real command: Table 2's recipe row and the per-type table, as the store holds them (x 100, 1 decimal)."""
    from cli_helpers import cli_runs
    from layerscope.store import load_run

    _, model, root = recipe_run
    model.model.save_pretrained(str(tmp_path / "model"))
    model.tokenizer.save_pretrained(str(tmp_path / "model"))
    out = tmp_path / "run"
    [(code, errors, printed)] = cli_runs(
        ["analyze", "--model", str(tmp_path / "model"), "--tasks", f"{root / 'topics.csv'},{root / 'similar.csv'}",
         "--split-column", "split", "--metrics", "prompt_entropy", "--recipes", "mean:0.5-1", "--no-cache",
         "--eval-workers", "1", "--out", str(out)])
    assert code == 0, errors
    run = load_run(out)
    stored = run.recipes.set_index("task_type")["main_score"]
    last = run.scores[run.scores["layer"] == model.num_layers].set_index("task_type")["main_score"]
    lines = printed.splitlines()
    table_2 = next(i for i, line in enumerate(lines) if line.startswith("Layer choice per task (Table 2"))
    row = next(line for line in lines[table_2:] if line.startswith("\u2502 recipes: *=mean:0.5-1 "))
    cells = [cell.strip() for cell in row.split("\u2502")[1:-1]]
    shown = 0.05 + 1e-9  # printed with one decimal

    def close(cells: list[str], values: list[float]) -> bool:
        return len(cells) == len(values) and all(abs(float(c) - v) <= shown for c, v in zip(cells, values, strict=True))

    assert cells[1:3] == ["recipe", "-"]
    assert close(cells[3:], [100 * stored.mean(), 100 * (stored.mean() - last.mean()),
                             100 * stored["Classification"], 100 * stored["STS"]])
    start = next(i for i, line in enumerate(lines) if line.startswith("Recipes vs the last layer per task type"))
    rows = [[cell.strip() for cell in line.split("\u2502")[1:-1]] for line in lines[start + 4:start + 7]]
    assert [row[1:4] for row in rows] == [["clf", "mean:0.5-1", "1"], ["sts", "mean:0.5-1", "1"],
                                          ["average", "mean:0.5-1", "2"]]
    assert rows[0][0].startswith("recipes") and rows[1][0] == rows[2][0] == ""  # the set named once
    for row, kind in zip(rows, ["Classification", "STS"], strict=False):
        assert close(row[4:], [100 * last[kind], 100 * stored[kind], 100 * (stored[kind] - last[kind])])


# ------------------------------------------------------------------------------------------ the benchmark's record


def bench_recipes():
    spec = importlib.util.spec_from_file_location("bench_recipes", REPO / "benchmarks" / "bench_recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def planted(out: Path, gains: dict[str, dict[tuple[str, str], float]]) -> None:
    """Cached recipe scores of models whose tasks score 0.6 under every grid recipe but the planted gains
    (points), two classification and two STS tasks each, where the benchmark keeps them."""
    from layerscope.analysis.recipe_protocol import recipe_grid

    out.mkdir(parents=True, exist_ok=True)
    for model, planted_gains in gains.items():
        rows = [{"recipe": recipe.text, "task": task, "task_type": kind, "model": model, "starts_from": "raw layers",
                 "kind": "sentence-encoder" if model.startswith("enc") else "language-model",
                 "main_score": 0.6 + planted_gains.get((kind, recipe.text), 0.0) / 100}
                for kind, task in [("Classification", "c1"), ("Classification", "c2"), ("STS", "s1"), ("STS", "s2")]
                for recipe in recipe_grid()]
        pd.DataFrame(rows).to_parquet(out / f"{model}-planted.parquet")


def test_the_benchmark_writes_the_record_auto_reads(tmp_path, capsys) -> None:
    helps = {("Classification", "zmean:0.5-1"): 3.0, ("STS", "last+standardize"): 2.0}
    hurts = {("Classification", "zmean:0.5-1"): -4.0, ("STS", "last+standardize"): 2.0}
    planted(tmp_path / "scores", {"alpha-1": helps, "beta-1": helps, "gamma-1": helps, "tiny-x": hurts})
    path = tmp_path / "record.json"
    bench_recipes().main(["alpha-1", "beta-1", "gamma-1", "tiny-x", "--tasks", "planted", "--out",
                          str(tmp_path / "scores"), "--n-boot", "50", "--write-record", str(path)])
    record = json.loads(path.read_text())
    # chosen on the others, each model gains: clf 3, 3 and sts 2, 2 -> 2.5; tiny-x: clf -4, -4, sts 2, 2 -> -1
    lomo = record["held_out"]["leave-one-model-out"]
    assert {row["model"]: row["gain"] for row in lomo["per_model"]} == pytest.approx(
        {"alpha-1": 2.5, "beta-1": 2.5, "gamma-1": 2.5, "tiny-x": -1.0})
    assert (lomo["wins"], lomo["losses"], lomo["models"]) == (3, 1, 4)
    assert lomo["mean_gain"] == pytest.approx(6.5 / 4) and lomo["worst"] == pytest.approx(-1.0)
    # the worst *pretrained* model leaves the tiny one out
    assert lomo["worst_pretrained"] == {"model": "alpha-1", "gain": pytest.approx(2.5)}
    assert set(record["held_out"]) == {"leave-one-model-out", "leave-one-family-out"}
    assert record["beats_last_held_out"] is True
    # on all four (one kind): per type the planted recipes; over all tasks last+standardize (gain 1 on every
    # model) beats zmean:0.5-1 (1.5 on three models, -2 on tiny-x)
    entry = record["kinds"]["language-model"]
    assert set(record["kinds"]) == {"language-model"} and entry["beats_last_held_out"] is True
    assert entry["recipe_set"] == "classification=zmean:0.5-1;sts=last+standardize;*=last+standardize"
    assert entry["models"] == ["alpha-1", "beta-1", "gamma-1", "tiny-x"]
    assert entry["held_out"]["leave-one-model-out"]["mean_gain"] == pytest.approx(6.5 / 4)
    assert record["suite"] == {"name": "planted", "version": None, "tasks": ["c1", "c2", "s1", "s2"]}
    assert auto_recipe_set(record, "language-model") == entry["recipe_set"]
    assert auto_recipe_set(record, "sentence-encoder") == "last"  # no model of that kind: no evidence
    last_line = capsys.readouterr().out.splitlines()[-1]
    assert last_line.startswith("gain: ") and float(last_line.split()[-1]) == pytest.approx(6.5 / 4, abs=0.005)
    # where it loses on more models than it wins, auto stays the last layer: each model's own recipe helps the
    # two others and hurts it, so the recipe chosen on the two others hurts the held-out one
    own = {"alpha-1": "zmean:0.5-1", "beta-1": "mean:0.5-1", "gamma-1": "depth:0.5"}
    planted(tmp_path / "losing", {model: {(kind, recipe): -5.0 if other == model else 2.0
                                          for other, recipe in own.items() for kind in ("Classification", "STS")}
                                  for model in own})
    bench_recipes().main(["alpha-1", "beta-1", "gamma-1", "--tasks", "planted", "--out", str(tmp_path / "losing"),
                          "--n-boot", "50", "--write-record", str(path)])
    record = json.loads(path.read_text())
    assert record["beats_last_held_out"] is False and auto_recipe_set(record, "language-model") == "last"
    # a lone sentence encoder beside them: held out, nothing of its kind to choose on, gain 0 (the last layer)
    planted(tmp_path / "scores", {"enc-1": helps})
    bench_recipes().main(["alpha-1", "beta-1", "gamma-1", "enc-1", "--tasks", "planted", "--out",
                          str(tmp_path / "scores"), "--n-boot", "50", "--write-record", str(path)])
    record = json.loads(path.read_text())
    printed = capsys.readouterr().out
    assert "only 1 sentence-encoder model: held out, it has no model of its kind" in printed
    assert "only 1 language-model" not in printed
    lone = [row for row in record["held_out"]["leave-one-model-out"]["per_model"] if row["model"] == "enc-1"]
    assert [(row["kind"], row["recipe_set"], row["gain"]) for row in lone] == [("sentence-encoder", "*=last", 0.0)]
    assert record["kinds"]["sentence-encoder"]["beats_last_held_out"] is False
    assert auto_recipe_set(record, "sentence-encoder") == "last"
    assert auto_recipe_set(record, "language-model") == record["kinds"]["language-model"]["recipe_set"]
    # one model: nothing to hold out, no evidence, the last layer
    bench_recipes().main(["alpha-1", "--tasks", "planted", "--out", str(tmp_path / "scores"), "--write-record",
                          str(path)])
    record = json.loads(path.read_text())
    assert (record["held_out"], record["beats_last_held_out"], auto_recipe_set(record)) == ({}, False, "last")


def test_a_database_from_before_recipes_reads_and_migrates(tmp_path) -> None:
    from layerscope.store import ResultsStore

    with ResultsStore(tmp_path) as store:
        run_id = store.begin_run({"model": "m"}, model_id="m")
        store.connection.execute("DROP TABLE recipe_scores")  # as a database written before the table existed
    with ResultsStore(tmp_path, read_only=True) as store:
        assert store.recipe_scores(run_id).empty
    with ResultsStore(tmp_path) as store:  # opened for writing: the table is created, the run kept
        store.write_recipe_scores(run_id, pd.DataFrame({"recipe_set": ["*=last+standardize"], "source": ["given"],
                                                        "recipe": ["last+standardize"], "task": ["t"],
                                                        "task_type": ["STS"], "main_score": [0.5],
                                                        "scores": [{"main_score": 0.5}]}))
        got = store.recipe_scores(run_id)
    assert got[["recipe_set", "recipe", "main_score"]].values.tolist() == [["*=last+standardize", "last+standardize",
                                                                            0.5]]
    assert json.loads(got["scores"].iloc[0]) == {"main_score": 0.5}



def test_kept_scores_of_another_suite_are_not_reused(tmp_path) -> None:
    """Scores kept under a suite's name whose tasks are not that suite's (an older version) are recomputed:
    here the model must load again, and this one does not exist."""
    planted(tmp_path, {"alpha-1": {}})
    (tmp_path / "alpha-1-planted.parquet").rename(tmp_path / "alpha-1-offline-v1.parquet")
    module = bench_recipes()
    assert module._task_names("offline-v1") != {"c1", "c2", "s1", "s2"}
    with pytest.raises(LayerscopeError, match="alpha-1"):
        module.recipe_scores("alpha-1", "offline-v1", tmp_path, "1")
