"""A recipe taken away (issue 23 points 4 and 5): exported as a sentence-transformers model, written as
embeddings of a file.

An exported folder is loaded the way its README says, in a fresh interpreter that never imports
layerscope, and must encode texts it never saw as :func:`recipe_embeddings` computes them from
layerscope's own extraction, fitted on the same unlabelled texts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import layerscope as ls
from layerscope.analysis.recipe_export import embed_recipe, export_recipe
from layerscope.analysis.recipes import recipe_embeddings
from layerscope.data import load_rows
from layerscope.errors import LayerscopeError
from layerscope.models.tiny import tiny_model

TEXTS = ["Which layer of this model gives the best features for my task?",
         "Short.",
         "Exported models keep the embeddings and the first blocks; the later blocks and any head are dropped.",
         "Padding to the longest text of a batch must not change anyone's embedding, in any family."]
FIT_TEXTS = [f"an unlabelled text number {i} with {'more ' * (i % 5)}words about {('cats', 'trains', 'soup')[i % 3]}"
             for i in range(30)]


def close(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal to 1e-5 relative to the largest value: float32 forward passes in other batch shapes (a few
    ulps) go through float64 z-scores and a float32 Dense; a wrong layer or fit is off by far more."""
    return got.shape == want.shape and float(np.abs(got - want).max()) <= 1e-5 * max(1.0, float(np.abs(want).max()))


def encode_in_a_fresh_process(folders: list[tuple[Path, bool]], tmp_path: Path) -> dict[str, np.ndarray]:
    """``SentenceTransformer(folder[, trust_remote_code=True]).encode(TEXTS)`` in a new interpreter, as a
    user would load each folder, with what it imported; a folder loaded with trust also tried without."""
    script = """
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer

folders, texts, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
arrays = {}
for position, (folder, trust) in enumerate(folders):
    model = SentenceTransformer(folder, device="cpu", trust_remote_code=trust)
    arrays[f"encoded{position}"] = model.encode(texts, batch_size=3, convert_to_numpy=True)
    if trust:
        try:
            SentenceTransformer(folder, device="cpu")
            arrays[f"refused{position}"] = np.array("")
        except ValueError as error:
            arrays[f"refused{position}"] = np.array(str(error))
arrays["imported"] = np.array(sorted(name for name in sys.modules if name.split(".")[0] == "layerscope") or [""])
np.savez(out, **arrays)
"""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf-modules")  # where transformers copies the folder's code
    out = tmp_path / "encoded.npz"
    subprocess.run([sys.executable, "-c", script, json.dumps([[str(f), trust] for f, trust in folders]),
                    json.dumps(TEXTS), str(out)], check=True, cwd=tmp_path, env=env, timeout=600)
    return dict(np.load(out))


def expected(model, recipe: str, *, pooling: str = "mean", normalized: tuple[int, ...] = (),
             max_length: int | None = 64) -> np.ndarray:
    """The recipe's embeddings of TEXTS fitted on FIT_TEXTS, from layerscope's extraction of every layer."""
    fit = ls.extract(model, FIT_TEXTS, pooling=pooling, max_length=max_length, progress=False)
    texts = ls.extract(model, TEXTS, pooling=pooling, max_length=max_length, progress=False)
    return recipe_embeddings(texts.pooled, texts.layers, recipe, last_layer=model.num_layers, fit=fit.pooled,
                             normalized=normalized).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Tiny models' recipes exported: two windows (custom module) and one single layer (pure ST), encoded
    in one fresh interpreter."""
    root = tmp_path_factory.mktemp("exported")
    cases = {  # name: (family, recipe, pooling)
        "zmean": ("llama", "zmean:0.5-0.75+standardize", "mean"),  # layers 3, 4 of 6; final norm left out
        "mean": ("bert", "mean:0-0.5+whiten:8", "first"),  # the embedding layer 0 in the window
        "single": ("llama", "layer:3+remove-top:2", "mean"),
    }
    models, results = {}, {}
    for name, (family, recipe, pooling) in cases.items():
        models[name] = tiny_model(family, num_layers=6)
        results[name] = export_recipe(models[name], recipe, root / name, pooling=pooling, max_length=64,
                                      fit_texts=FIT_TEXTS, fit_source="test texts")
    encoded = encode_in_a_fresh_process([(root / name, name != "single") for name in cases], root)
    return root, cases, models, results, encoded


@pytest.mark.numeric
@pytest.mark.parametrize("name", ["zmean", "mean"])
def test_a_window_exports_as_the_recipe_and_loads_as_its_readme_says(exported, name):
    from transformers import AutoConfig

    root, cases, models, results, encoded = exported
    family, recipe, pooling = cases[name]
    position = list(cases).index(name)
    assert close(encoded[f"encoded{position}"], expected(models[name], recipe, pooling=pooling))
    # loaded without importing layerscope, and not without the user's consent to run the folder's code
    assert encoded["imported"].tolist() == [""]
    assert "trust_remote_code=True" in str(encoded[f"refused{position}"])
    folder = root / name
    window = results[name].record["layers"]
    assert AutoConfig.from_pretrained(folder).num_hidden_layers == window[-1] == results[name].layer  # blocks kept
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"] for m in modules][1:] == ["layerscope_window.LayerWindowMean",
                                                "sentence_transformers.base.modules.dense.Dense"]
    assert (folder / "layerscope_window.py").is_file()
    load = f"SentenceTransformer({str(folder)!r}, trust_remote_code=True)"
    assert results[name].record["load"] == load and load in (folder / "README.md").read_text()
    # the window module's maps, read off the fitted recipe, compute the recipe (float64 both ways, the
    # z-scores as a diagonal map: a few ulps of O(1) values)
    from layerscope.analysis.recipe_export import window_maps
    from layerscope.analysis.recipes import fit_recipe

    pooled = ls.extract(models[name], TEXTS, pooling=pooling, layers=window, max_length=64, progress=False).pooled
    fit = ls.extract(models[name], FIT_TEXTS, pooling=pooling, layers=window, max_length=64, progress=False).pooled
    fitted = fit_recipe(fit, window, recipe, last_layer=6)
    np.testing.assert_allclose(window_maps(fitted).apply(pooled), recipe_embeddings(
        pooled, window, recipe, last_layer=6, fit=fit).numpy(), rtol=1e-10, atol=1e-10)
    record = json.loads((folder / "layerscope_export.json").read_text())
    assert record["recipe"] == recipe and record["fitted_on"] == "30 unlabelled texts of test texts"
    assert record["starts_from"] == [f"layer {layer} raw" for layer in window]


@pytest.mark.numeric
def test_a_single_layer_recipe_stays_a_plain_sentence_transformers_model(exported):
    root, cases, models, results, encoded = exported
    _, recipe, _ = cases["single"]
    assert close(encoded[f"encoded{list(cases).index('single')}"], expected(models["single"], recipe))
    modules = json.loads((root / "single" / "modules.json").read_text())
    assert all(m["type"].startswith("sentence_transformers.") for m in modules)  # no custom code to trust
    assert not list((root / "single").glob("*.py"))
    assert results["single"].record["load"] == f"SentenceTransformer({str(root / 'single')!r})"


@pytest.mark.slow
@pytest.mark.numeric
def test_minilm_recipes_start_from_the_last_layer_as_shipped(tmp_path):
    """all-MiniLM-L6-v2 ships L2-normalized: by default a recipe reads its layer 6 normalized, in the
    export (a Normalize module before the conditioning; inside the window module) as in layerscope."""
    model = ls.load_model("minilm-l6", device="cpu")
    recipes = ["last+remove-top:2", "zmean:0.5-1"]
    for recipe in recipes:
        export_recipe(model, recipe, tmp_path / recipe.replace(":", "_"), fit_texts=FIT_TEXTS)
    encoded = encode_in_a_fresh_process([(tmp_path / "last+remove-top_2", False), (tmp_path / "zmean_0.5-1", True)],
                                        tmp_path)
    for position, recipe in enumerate(recipes):
        want = expected(model, recipe, normalized=(6,), max_length=None)
        assert close(encoded[f"encoded{position}"], want), recipe
        raw = expected(model, recipe, max_length=None)  # the raw layer 6 gives other embeddings
        assert not close(encoded[f"encoded{position}"], raw), recipe
    modules = json.loads((tmp_path / "last+remove-top_2" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize", "Dense"]
    record = json.loads((tmp_path / "zmean_0.5-1" / "layerscope_export.json").read_text())
    assert record["starts_from"] == ["layer 3 raw", "layer 4 raw", "layer 5 raw",
                                     "layer 6 L2-normalized as the model ships it"]


def test_what_a_recipe_export_cannot_do_is_one_line(tmp_path):
    model = tiny_model("llama", num_layers=4)
    cases = [
        (dict(recipe="classification=zmean:0.5-1;*=last"), "holds one recipe per task type: name the type the "
                                                           "embedding is for (--task-type classification, ...)"),
        (dict(recipe="zmean:0.5-1"), "the recipe 'zmean:0.5-1' is fitted on texts: give some (--fit-dataset)"),
        (dict(recipe="mean:0.5-1", final_norm="all"), "a window of layers exports the raw residual stream only"),
        (dict(recipe="mean:0-0"), "export needs at least one block"),
        (dict(recipe="last", task_type="sentiment"), "unknown task type 'sentiment'"),
    ]
    for options, message in cases:
        with pytest.raises(LayerscopeError) as error:
            export_recipe(model, out=tmp_path / "x", **options)
        assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


# ------------------------------------------------------------------------------------------ embed


@pytest.fixture
def table(tmp_path):
    texts = [*FIT_TEXTS[:9], "", *TEXTS]
    path = tmp_path / "tickets.csv"
    pd.DataFrame({"ticket": [f"T-{i}" for i in range(len(texts))], "text": texts}).to_csv(path, index=False)
    return path


@pytest.mark.numeric
def test_embed_recipe_equals_the_recipe_fitted_on_the_texts_embedded(table, tmp_path):
    model = tiny_model("gpt2", num_layers=4)
    rows = load_rows(table, id_column="ticket")
    recipes = "classification=zmean:0.5-1+standardize;*=last"
    result = embed_recipe(model, rows, recipes, tmp_path / "vectors.parquet", task_type="Classification",
                          chunk_size=4, cache_dir=str(tmp_path / "cache"), progress=False)
    frame = pd.read_parquet(tmp_path / "vectors.parquet")
    assert frame["id"].tolist() == rows.ids and "T-9" not in rows.ids  # the empty text is skipped
    whole = ls.extract(model, rows.texts, progress=False)  # one extraction, fitted on the same texts
    want = recipe_embeddings(whole.pooled, whole.layers, "zmean:0.5-1+standardize", last_layer=4).numpy()
    assert close(np.stack(frame["embedding"].to_numpy()), want)
    record = json.loads((tmp_path / "vectors.parquet.json").read_text())
    assert record == result.record | {"file": "vectors.parquet"}
    assert record["recipe"] == "zmean:0.5-1+standardize" and record["layers"] == [2, 3, 4]
    assert record["fitted_on"] == f"the {len(rows.texts)} texts embedded ({rows.source}), without labels"
    assert record["recipe_set"] == "classification=zmean:0.5-1+standardize;*=last"


def test_embed_and_export_commands_take_a_recipe_or_say_what_is_wrong(table, tmp_path):
    from cli_helpers import cli_runs

    model = tiny_model("gpt2", num_layers=4)
    model.model.save_pretrained(str(tmp_path / "model"))
    model.tokenizer.save_pretrained(str(tmp_path / "model"))
    common = ["--model", str(tmp_path / "model"), "--no-cache"]
    (ok, _, printed), *failures = cli_runs(
        ["embed", *common, "--dataset", str(table), "--id-column", "ticket", "--recipe", "mean:0.5-1+whiten:3",
         "--out", str(tmp_path / "v.npy")],
        ["embed", *common, "--recipe", "zmean:0.5-1+standardise", "--out", str(tmp_path / "w.npy")],
        ["export", "--model", str(tmp_path / "model"), "--recipe", "middle", "--out", str(tmp_path / "m")],
        ["embed", *common, "--out", str(tmp_path / "w.npy")],
        ["embed", *common, "--layer", "2", "--recipe", "last", "--out", str(tmp_path / "w.npy")],
        ["export", "--model", str(tmp_path / "model"), "--recipe", "last", "--condition", "standardize",
         "--out", str(tmp_path / "m")],
    )
    assert ok == 0 and "recipe mean:0.5-1+whiten:3: 13 embeddings of dimension 3" in printed
    rows = load_rows(table, id_column="ticket")
    whole = ls.extract(model, rows.texts, progress=False)
    want = recipe_embeddings(whole.pooled, whole.layers, "mean:0.5-1+whiten:3", last_layer=4).numpy()
    # whitened coordinates have unit variance on the fitting texts: the comparison's scale is O(1)
    assert close(np.load(tmp_path / "v.npy")["embedding"], want)
    # --recipe auto: the recipe record's set for the model's kind (a model without modules.json: a language
    # model), its classification recipe with --task-type
    from layerscope.analysis.recipe_runs import auto_recipe_set
    from layerscope.analysis.recipes import recipe_for

    [(code, lines, said)] = cli_runs(["embed", *common, "--dataset", str(table), "--id-column", "ticket", "--recipe",
                                      "auto", "--task-type", "classification", "--out", str(tmp_path / "a.npy")])
    chosen = auto_recipe_set(kind="language-model")
    assert code == 0, lines
    said_line = "".join("".join(lines).split())  # the console wraps the long set: compare without whitespace
    assert f"--recipeautoforalanguage-model:{chosen}" in said_line
    auto = recipe_for(chosen, "classification").text
    assert close(np.load(tmp_path / "a.npy")["embedding"],
                 recipe_embeddings(whole.pooled, whole.layers, auto, last_layer=4).numpy())
    assert [(code, lines) for code, lines, _ in failures] == [
        (2, ["error: bad recipe 'zmean:0.5-1+standardise': unknown conditioning 'standardise' (did you mean "
             "'standardize'?); use one of none, standardize, whiten, remove-top"]),
        (2, ["error: bad recipe 'middle': use last, layer:L, depth:F, mean:A-B or zmean:A-B, optionally followed "
             "by +standardize, +whiten[:rank] or +remove-top[:k], depths in [0, 1] with A <= B"]),
        (2, ["error: give --layer or --recipe (one of them)"]),
        (2, ["error: give --layer or --recipe (one of them)"]),
        (2, ["error: give the conditioning in the recipe (e.g. --recipe 'last+standardize'), not as --condition"]),
    ]
