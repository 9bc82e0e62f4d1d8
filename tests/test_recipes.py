"""Representation recipes (issue 23): parsing, each recipe against a float64 reference written here from
its definition, fitting on some texts and applying to others, and scoring equal to ``mteb.evaluate``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from layerscope.analysis.recipes import (
    Recipe,
    parse_recipe,
    parse_recipe_set,
    recipe_embeddings,
    recipe_layers,
)
from layerscope.errors import LayerscopeError

LAST = 6  # layers 0..6
RNG = np.random.default_rng(23)
# Layers of very different scales and offsets, as real residual streams: a plain mean is dominated by
# the largest, a mean of standardized layers is not.
POOLED = (RNG.normal(size=(LAST + 1, 40, 5)) * np.array([1, 3, 10, 0.5, 50, 2, 7])[:, None, None]
          + RNG.normal(size=(LAST + 1, 1, 5)) * 4).astype(np.float32)  # (layers, n, d)
LAYERS = list(range(LAST + 1))


# ------------------------------------------------------------------------------------------ references


def z_scores(x: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Per-dimension (x - mean) / std with the fitting rows' mean and population std (ddof 0)."""
    return (x - fit.mean(axis=0)) / fit.std(axis=0)


def reference(kind: str, layers: list[int], x: np.ndarray, fit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The recipe's layers of ``x`` (and of ``fit``) combined as ``kind`` says, in float64."""
    xs, fs = x[layers].astype(np.float64), fit[layers].astype(np.float64)
    if kind == "zmean":
        xs = np.stack([z_scores(a, b) for a, b in zip(xs, fs, strict=True)])
        fs = np.stack([z_scores(b, b) for b in fs])
    return xs.mean(axis=0), fs.mean(axis=0)


def principal(fit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variances (descending) and directions of the fitting rows' population covariance."""
    centered = fit - fit.mean(axis=0)
    values, vectors = np.linalg.eigh(centered.T @ centered / len(fit))
    return values[::-1], vectors[:, ::-1]


# ------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("text", ["last", "layer:3", "depth:0.75", "mean:0.5-1", "zmean:0.25-0.75",
                                  "last+standardize", "zmean:0.5-1+whiten:3", "depth:0.5+remove-top:2"])
def test_recipe_texts_round_trip(text) -> None:
    recipe = parse_recipe(text)
    assert recipe.text == text and parse_recipe(recipe.text) == recipe


def test_recipe_spellings_and_layers() -> None:
    assert parse_recipe(" ZMEAN:.5-1.0 + Whiten:4 ") == Recipe("zmean", 0.5, 1.0, "whiten:4")
    assert parse_recipe("depth:1").text == "last"
    assert parse_recipe("last").layers(LAST) == [6]
    assert parse_recipe("depth:0.75").layers(LAST) == [5]  # floor(4.5 + 0.5), as the depth rules round
    assert parse_recipe("mean:0.5-1").layers(LAST) == [3, 4, 5, 6]
    assert parse_recipe("mean:0.5-1").layers(30) == list(range(15, 31))  # 0.5 * 30 = 15 is inside
    assert parse_recipe("layer:2").layers(LAST) == [2]


@pytest.mark.parametrize(("text", "message"), [
    ("middle", "bad recipe 'middle': use last, layer:L, depth:F, mean:A-B or zmean:A-B, optionally followed by "
               "+standardize, +whiten[:rank] or +remove-top[:k], depths in [0, 1] with A <= B"),
    ("mean:0.9-0.2", "bad recipe 'mean:0.9-0.2': use last"),
    ("depth:1.5", "bad recipe 'depth:1.5': use last"),
    ("last+standardize+whiten", "bad recipe 'last+standardize+whiten': one conditioning at most"),
    ("last+whiten:0", "bad recipe 'last+whiten:0': bad conditioning 'whiten:0'"),
    ("last+pca", "bad recipe 'last+pca': unknown conditioning 'pca'"),
])
def test_bad_recipes_get_one_line(text, message) -> None:
    with pytest.raises(LayerscopeError) as error:
        parse_recipe(text)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_window_without_a_layer_and_a_missing_layer_are_one_line() -> None:
    with pytest.raises(LayerscopeError, match=r"recipe 'mean:0.41-0.42' holds no layer of a model with layers 0 to 6"):
        parse_recipe("mean:0.41-0.42").layers(LAST)
    with pytest.raises(LayerscopeError, match="recipe 'layer:9': the model has layers 0 to 6"):
        parse_recipe("layer:9").layers(LAST)
    with pytest.raises(LayerscopeError, match="recipe 'last' needs layer 6, which was not extracted"):
        recipe_embeddings(POOLED[:3], [0, 1, 2], "last", last_layer=LAST)


def test_recipe_sets_parse_per_type_and_round_trip() -> None:
    recipes = parse_recipe_set("Classification=zmean:0.5-1.0; *=last+standardize; pair_classification=depth:0.5")
    assert recipes.for_type("Classification") == Recipe("zmean", 0.5, 1.0)
    assert recipes.for_type("PairClassification") == Recipe("layer", 0.5, 0.5)
    assert recipes.for_type("Retrieval") == recipes.for_type("STS") == Recipe("layer", 1.0, 1.0, "standardize")
    assert recipes.text == "classification=zmean:0.5-1;pairclassification=depth:0.5;*=last+standardize"
    assert parse_recipe_set(recipes.text) == recipes
    assert parse_recipe_set("last").for_type("Clustering") == Recipe("layer")
    assert recipe_layers(recipes, LAST) == {"Classification": [3, 4, 5, 6], "*": [6], "PairClassification": [3]}
    with pytest.raises(LayerscopeError, match=r"unknown task type 'clasification' in a recipe set \(did you mean "
                                              r"'classification'\?\)"):
        parse_recipe_set("clasification=last")
    with pytest.raises(LayerscopeError, match="bad recipe set 'sts=last;STS=depth:0.5': STS is given twice"):
        parse_recipe_set("sts=last;STS=depth:0.5")
    with pytest.raises(LayerscopeError, match=r"has no recipe for Clustering tasks \(add \*=...\)"):
        parse_recipe_set("sts=last").for_type("Clustering")


# ------------------------------------------------------------------------------------------ values


# float64 throughout, but the reference sums in another order than the batched torch code: a few ulps of
# the values' scale (z-scores and whitened values are O(1), raw layers up to ~200).
RTOL, ATOL = 1e-10, 1e-10


@pytest.mark.numeric
@pytest.mark.parametrize(("text", "kind", "layers"), [
    ("last", "layer", [6]), ("depth:0.5", "layer", [3]), ("mean:0.5-1", "mean", [3, 4, 5, 6]),
    ("zmean:0.5-1", "zmean", [3, 4, 5, 6]), ("zmean:0-1", "zmean", LAYERS),
])
def test_layer_choices_equal_the_reference(text, kind, layers) -> None:
    got = recipe_embeddings(POOLED, LAYERS, text, last_layer=LAST)
    want, _ = reference(kind, layers, POOLED, POOLED)
    assert got.dtype == torch.float64 and got.shape == (40, 5)
    np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=ATOL)


@pytest.mark.numeric
def test_zmean_is_not_dominated_by_the_largest_layer() -> None:
    raw = recipe_embeddings(POOLED, LAYERS, "mean:0-1", last_layer=LAST).numpy()
    z = recipe_embeddings(POOLED, LAYERS, "zmean:0-1", last_layer=LAST).numpy()
    # layer 4 has 50x the scale: the raw mean follows it, the z-mean weighs every layer alike
    assert np.corrcoef(raw[:, 0], POOLED[4, :, 0])[0, 1] > 0.95
    assert abs(np.corrcoef(z[:, 0], POOLED[4, :, 0])[0, 1]) < 0.7


@pytest.mark.numeric
def test_conditionings_equal_the_reference() -> None:
    base, _ = reference("zmean", [3, 4, 5, 6], POOLED, POOLED)
    standardized = recipe_embeddings(POOLED, LAYERS, "zmean:0.5-1+standardize", last_layer=LAST).numpy()
    np.testing.assert_allclose(standardized, z_scores(base, base), rtol=RTOL, atol=ATOL)
    variances, vectors = principal(base)
    # remove-top:2: centre, then drop the projections on the top 2 principal directions (sign-free)
    removed = recipe_embeddings(POOLED, LAYERS, "zmean:0.5-1+remove-top:2", last_layer=LAST).numpy()
    top = vectors[:, :2]
    centered = base - base.mean(axis=0)
    np.testing.assert_allclose(removed, centered - centered @ top @ top.T, rtol=RTOL, atol=ATOL)
    # whiten:3: coordinates on the top 3 directions over their standard deviations; compared by the Gram
    # matrix, which does not depend on the directions' signs
    whitened = recipe_embeddings(POOLED, LAYERS, "zmean:0.5-1+whiten:3", last_layer=LAST).numpy()
    assert whitened.shape == (40, 3)
    projected = centered @ vectors[:, :3] / np.sqrt(variances[:3])
    np.testing.assert_allclose(whitened @ whitened.T, projected @ projected.T, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(whitened.T @ whitened / 40, np.eye(3), atol=1e-9)  # white on the fitting texts


@pytest.mark.numeric
def test_fitted_on_some_texts_and_applied_to_others() -> None:
    fit, texts = POOLED[:, :30], POOLED[:, 30:]
    got = recipe_embeddings(texts, LAYERS, "zmean:0.5-1+standardize", last_layer=LAST, fit=fit).numpy()
    x, f = reference("zmean", [3, 4, 5, 6], texts, fit)  # z-scores with the fitting texts' statistics
    np.testing.assert_allclose(got, z_scores(x, f), rtol=RTOL, atol=ATOL)
    # not the same as fitting on the texts themselves: the fit really comes from elsewhere
    own = recipe_embeddings(texts, LAYERS, "zmean:0.5-1+standardize", last_layer=LAST).numpy()
    assert np.abs(own - got).max() > 0.05
    last = recipe_embeddings(texts, LAYERS, "last+standardize", last_layer=LAST, fit=fit).numpy()
    np.testing.assert_allclose(last, z_scores(texts[6].astype(np.float64), fit[6].astype(np.float64)),
                               rtol=RTOL, atol=ATOL)


@pytest.mark.numeric
def test_a_recipe_starts_from_the_layers_named_normalized() -> None:
    """The last layer as a model that ships normalized ships it: unit rows, before z-scores and the fit."""
    unit = POOLED.astype(np.float64).copy()
    unit[6] /= np.linalg.norm(unit[6], axis=1, keepdims=True)
    fit, texts = unit[:, :30], unit[:, 30:]
    got = recipe_embeddings(POOLED[:, 30:], LAYERS, "zmean:0.5-1+standardize", last_layer=LAST, fit=POOLED[:, :30],
                            normalized=[6]).numpy()
    x, f = reference("zmean", [3, 4, 5, 6], texts, fit)
    np.testing.assert_allclose(got, z_scores(x, f), rtol=RTOL, atol=ATOL)
    last = recipe_embeddings(POOLED, LAYERS, "last", last_layer=LAST, normalized=[6]).numpy()
    np.testing.assert_allclose(last, unit[6], rtol=RTOL, atol=ATOL)
    # a layer outside the recipe's window is not touched: depth:0.5 reads layer 3 as it is
    np.testing.assert_array_equal(recipe_embeddings(POOLED, LAYERS, "depth:0.5", last_layer=LAST, normalized=[6]),
                                  recipe_embeddings(POOLED, LAYERS, "depth:0.5", last_layer=LAST))


def test_a_memory_map_is_read_as_an_array(tmp_path) -> None:
    path = tmp_path / "pooled.npy"
    np.save(path, POOLED)
    mapped = np.load(path, mmap_mode="r")
    got = recipe_embeddings(mapped, LAYERS, "mean:0.5-1", last_layer=LAST)
    # the same float64 computation on the same numbers: identical by construction
    torch.testing.assert_close(got, recipe_embeddings(POOLED, LAYERS, "mean:0.5-1", last_layer=LAST), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ scoring


mteb = pytest.importorskip("mteb")


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Two task files (classification, STS), a tiny model's extraction, and recipe scores."""
    from layerscope.analysis.recipes import evaluate_recipes
    from layerscope.evaluate import resolve
    from layerscope.evaluate.runner import _load, collect_texts
    from layerscope.extract import extract
    from layerscope.models.tiny import tiny_model

    root = tmp_path_factory.mktemp("recipes")
    words = {"animal": ["cat", "dog", "horse", "wolf"], "food": ["bread", "soup", "mango", "rice"],
             "vehicle": ["train", "car", "bus", "plane"]}
    rows = [{"text": f"The {nouns[i % 4]} number {i} was seen today.", "label": label,
             "split": "train" if i < 12 else "test"}  # MTEB draws 8 per class to train on
            for i in range(16) for label, nouns in words.items()]
    pd.DataFrame(rows).to_csv(root / "topics.csv", index=False)
    pairs = [{"sentence1": f"a {a} and a {b}", "sentence2": f"a {b} or a {c}", "score": float((i * 7) % 5)}
             for i, (a, b, c) in enumerate(zip(words["animal"] * 3, words["food"] * 3, words["vehicle"] * 3,
                                               strict=True))]
    pd.DataFrame(pairs).to_csv(root / "similar.csv", index=False)
    tasks = resolve([root / "topics.csv", root / "similar.csv"], files={"split_column": "split"})
    _load(tasks)
    model = tiny_model("llama")
    extraction = extract(model, collect_texts(tasks), progress=False)
    recipes = ["last", "zmean:0.5-1+standardize"]
    return tasks, extraction, evaluate_recipes(extraction, recipes, tasks, eval_workers=1), recipes


def test_recipe_scores_equal_mteb_run_directly(scored) -> None:
    from layerscope.evaluate.runner import main_score
    from mteb_helpers import FixedEncoder

    tasks, extraction, scores, recipes = scored
    assert scores["recipe"].unique().tolist() == recipes and len(scores) == 2 * len(tasks)
    for recipe in recipes:
        vectors = recipe_embeddings(extraction.pooled, extraction.layers, recipe,
                                    last_layer=extraction.num_layers).to(torch.float32).numpy()
        encoder = FixedEncoder(list(extraction.texts), vectors)
        for task in tasks:
            direct = mteb.evaluate(encoder, task, cache=None, show_progress_bar=False, co2_tracker=False)
            want = main_score(direct.task_results[0].scores)
            got = scores.query("recipe == @recipe and task == @task.metadata.name")["main_score"].item()
            # the same float32 embeddings, the same seeded evaluator: identical by construction
            assert got == want, (recipe, task.metadata.name)


def test_a_recipe_set_takes_each_type_from_its_recipe(scored) -> None:
    from layerscope.analysis.recipes import recipe_set_scores

    _, _, scores, _ = scored
    chosen = recipe_set_scores(scores, "sts=zmean:0.5-1+standardize;*=last").set_index("task")
    indexed = scores.set_index(["recipe", "task"])["main_score"]
    assert chosen.loc["topics", "main_score"] == indexed[("last", "topics")]
    assert chosen.loc["similar", "main_score"] == indexed[("zmean:0.5-1+standardize", "similar")]
    with pytest.raises(LayerscopeError, match="no score of recipe 'depth:0.5' on"):
        recipe_set_scores(scores, "depth:0.5")


# ------------------------------------------------------------------------------------------ protocol


def planted_scores(gains: dict[str, dict[tuple[str, str], float]], base: float = 0.6) -> pd.DataFrame:
    """Recipe scores of models whose every task scores ``base`` under every recipe except the planted
    gains: ``{model: {(task_type, recipe): gain in points}}``; 2 classification and 2 STS tasks each."""
    rows = []
    recipes = ["last", "zmean:0.5-1", "last+standardize", "depth:0.5"]
    for model, planted in gains.items():
        for task_type, task in [("Classification", "c1"), ("Classification", "c2"), ("STS", "s1"), ("STS", "s2")]:
            for recipe in recipes:
                bump = planted.get((task_type, recipe), 0.0) + (0.5 if task.endswith("2") and recipe != "last" else 0)
                rows.append({"model": model, "recipe": recipe, "task": task, "task_type": task_type,
                             "main_score": base + bump / 100})
    return pd.DataFrame(rows)


def test_the_protocol_picks_per_type_and_scores_held_out() -> None:
    from layerscope.analysis.recipe_protocol import run_recipe_protocol

    common = {("Classification", "zmean:0.5-1"): 3.0, ("STS", "last+standardize"): 2.0}
    result = run_recipe_protocol(planted_scores({m: common for m in ("a", "b", "c")}), n_boot=200)
    assert result.chosen.text == "classification=zmean:0.5-1;sts=last+standardize;*=zmean:0.5-1"
    lomo = result.held_out[result.held_out["scheme"] == "leave-one-model-out"].set_index("model")
    # tasks c1, c2 gain 3 and 3.5; s1, s2 gain 2 and 2.5: mean 2.75 points on every model
    assert lomo["gain"].tolist() == pytest.approx([2.75] * 3)
    assert result.beats_last() and result.summary() == {"mean_gain": pytest.approx(2.75), "wins": 3, "losses": 0,
                                                       "worst": pytest.approx(2.75), "models": 3}
    # the interval: the mean gain over the model's 4 tasks resampled, the documented draws written out
    gains = np.array([3.0, 3.5, 2.0, 2.5])
    draws = np.random.default_rng(0).integers(0, 4, size=(200, 4))
    assert (lomo.loc["a", "low"], lomo.loc["a", "high"]) == pytest.approx(
        tuple(np.quantile(gains[draws].mean(axis=1), [0.025, 0.975])))


def test_the_held_out_model_never_chooses_for_itself() -> None:
    from layerscope.analysis.recipe_protocol import run_recipe_protocol

    # model "leak" gains 50 points from depth:0.5 on classification, which costs the others 1 point:
    # a protocol that looked at the held-out model would pick it there and report +25
    gains = {m: {("Classification", "depth:0.5"): -1.0} for m in ("a", "b", "c")}
    gains["leak"] = {("Classification", "depth:0.5"): 50.0}
    result = run_recipe_protocol(planted_scores(gains), n_boot=50)
    held = result.held_out.query("scheme == 'leave-one-model-out'").set_index("model")
    assert "depth:0.5" not in held.loc["leak", "recipe_set"]
    assert held.loc["leak", "gain"] < 1.0
    # with every model, the leak's +50 outweighs three -1s: chosen on all, it would be picked
    assert result.chosen.for_type("Classification").text == "depth:0.5"


def test_leave_one_family_out_hides_the_siblings() -> None:
    from layerscope.analysis.recipe_protocol import run_recipe_protocol

    quirk = {("STS", "depth:0.5"): 10.0}
    gains = {"p-small": quirk, "p-large": quirk, "q": {("STS", "depth:0.5"): -1.0}, "r": {("STS", "depth:0.5"): -1.0}}
    result = run_recipe_protocol(planted_scores(gains), families={"p-small": "p", "p-large": "p"}, n_boot=50)
    held = result.held_out.set_index(["scheme", "model"])
    # one model out: the sibling's +10 outweighs the two -1s, so the quirk is picked and pays off
    assert "sts=depth:0.5" in held.loc[("leave-one-model-out", "p-small"), "recipe_set"]
    # the family out: only q and r remain, the quirk costs them, and it is not picked
    assert "sts=depth:0.5" not in held.loc[("leave-one-family-out", "p-small"), "recipe_set"]
    assert held.loc[("leave-one-family-out", "p-small"), "gain"] < held.loc[("leave-one-model-out", "p-small"), "gain"]


def test_kinds_choose_on_their_own_models_and_a_lone_kind_keeps_the_last_layer() -> None:
    from layerscope.analysis.recipe_protocol import run_recipe_protocol

    # three language models gain from zmean on classification; two sentence encoders lose 6 points from it
    # and gain 1 from last+standardize on STS: mixed, the encoders' rows would change nothing for the
    # language models (3 x +3 against 2 x -6 is -1.2 on average: zmean would lose)
    gains = {m: {("Classification", "zmean:0.5-1"): 3.0} for m in ("lm-a", "lm-b", "lm-c")}
    gains |= {m: {("Classification", "zmean:0.5-1"): -6.0, ("STS", "last+standardize"): 1.0} for m in ("enc-a", "enc-b")}
    kinds = {"lm-a": "language-model", "lm-b": "language-model", "lm-c": "language-model",
             "enc-a": "sentence-encoder", "enc-b": "sentence-encoder"}
    scores = planted_scores(gains)
    mixed = run_recipe_protocol(scores, n_boot=50)
    assert mixed.chosen.for_type("Classification").text != "zmean:0.5-1"
    result = run_recipe_protocol(scores, kinds=kinds, n_boot=50)
    held = result.held_out.query("scheme == 'leave-one-model-out'").set_index("model")
    assert held["kind"].to_dict() == kinds
    # each language model is chosen for by the two others only: zmean on classification pays off
    assert all(held.loc[m, "recipe_set"].startswith("classification=zmean:0.5-1") for m in ("lm-a", "lm-b", "lm-c"))
    # each encoder by the other encoder only: no zmean, and last+standardize on STS
    assert all("zmean" not in held.loc[m, "recipe_set"] and "sts=last+standardize" in held.loc[m, "recipe_set"]
               for m in ("enc-a", "enc-b"))
    assert result.chosen_by_kind["language-model"].for_type("Classification").text == "zmean:0.5-1"
    assert result.beats_last(kind="language-model") and result.beats_last(kind="sentence-encoder")
    assert result.summary(kind="sentence-encoder")["models"] == 2
    # a kind of one model: held out, nobody of its kind is left to choose on, so it keeps the raw last layer
    alone = run_recipe_protocol(scores[scores["model"] != "enc-b"], kinds=kinds, n_boot=50)
    lone = alone.held_out.query("scheme == 'leave-one-model-out'").set_index("model").loc["enc-a"]
    assert (lone["recipe_set"], lone["gain"], lone["low"], lone["high"]) == ("*=last", 0.0, 0.0, 0.0)
    assert not alone.beats_last(kind="sentence-encoder") and alone.beats_last(kind="language-model")


def test_the_raw_last_layer_wins_ties_and_one_model_is_refused() -> None:
    from layerscope.analysis.recipe_protocol import choose_recipe_set, run_recipe_protocol

    flat = pd.DataFrame({"model": "a", "recipe": ["zmean:0.5-1", "last"], "task": "t", "task_type": "STS",
                         "main_score": 0.5})
    assert choose_recipe_set(flat, ["last", "zmean:0.5-1"]).text == "sts=last;*=last"
    with pytest.raises(LayerscopeError, match="the recipe protocol needs at least 2 models, got 1"):
        run_recipe_protocol(flat)
