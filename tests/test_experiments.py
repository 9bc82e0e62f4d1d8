"""The paper's further experiments (SPEC section 7, issue 6) on tiny random-init models.

Each experiment: table shapes, rows in the results store, PNG files. Effects that only a trained model
shows (repetition lowers, randomness raises prompt entropy) are slow tests on the bundled SmolLM2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from layerscope.errors import LayerscopeError
from layerscope.experiments import EXPERIMENTS
from layerscope.models.tiny import tiny_model
from layerscope.store import ResultsStore

PROMPTS = [
    "Intermediate layers often make better embeddings than the last layer of a model.",
    "The quick brown fox jumps over the lazy dog near the river bank today and tomorrow.",
    "Matrix entropy of the Gram matrix measures how spread the tokens of one prompt are.",
    "Curvature measures how straight the token trajectory is through the space of a layer.",
    "Layer by layer, hidden representations change: compression in the middle, expansion later.",
    "short one",
    "The committee approved the new budget after a long debate on Tuesday evening in the hall.",
    "Researchers found that intermediate layers often give better sentence embeddings.",
]


def _png_ok(path: Path, min_size: tuple[int, int] = (300, 200)) -> bool:
    """The file decodes as a PNG image of at least ``min_size`` pixels (a real figure, not an empty canvas)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()  # decodes every pixel: a truncated file raises here
        width, height = image.size
        return image.format == "PNG" and width >= min_size[0] and height >= min_size[1] \
            and image.convert("L").getextrema()[0] < 250  # something is drawn on the white page


def _experiment_rows(out: Path, experiment: str) -> pd.DataFrame:
    with ResultsStore(out, read_only=True) as store:
        return store.experiment_values(experiment=experiment)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the 2 CI cores are shared, where 2 threads can be many times slower than 1."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", num_layers=3)


# ------------------------------------------------------------------------------------------ registry


def test_registry_names_and_lookup():
    from layerscope import experiments

    assert experiments.names() == ["checkpoints", "train-tiny", "sizes", "extreme-prompts", "compare-finetune",
                                   "sublayers", "bimodality", "vision"]
    assert experiments.get("extreme_prompts").name == "extreme-prompts"
    for experiment in experiments.EXPERIMENTS.values():
        assert callable(experiment.function) and experiment.description
    with pytest.raises(LayerscopeError, match="did you mean 'sublayers'"):
        experiments.get("sublayer")


def test_run_cli_rejects_unknown_options(llama, tmp_path):
    from layerscope.experiments import run_cli

    with pytest.raises(LayerscopeError, match="no option.*colour"):
        run_cli("bimodality", model=llama, colour="red", out=tmp_path)
    with pytest.raises(LayerscopeError, match="needs --base"):
        run_cli("compare-finetune", finetuned=llama, out=tmp_path)


def test_common_options_are_declared_once(llama):
    """The shared options are one TypedDict; each experiment takes its subset with its own defaults, listed
    by its signature, and a direct call with an option it lacks is a one-line error before any work."""
    import inspect

    from layerscope.experiments import get
    from layerscope.experiments.base import COMMON_DEFAULTS, COMMON_OPTIONS, CommonOptions
    from layerscope.experiments.bimodality import bimodality

    assert list(COMMON_DEFAULTS) == list(CommonOptions.__annotations__)
    assert COMMON_OPTIONS == ("model", "texts", "dataset", "limit", "seed", "max_length", "batch_size", "out",
                              "progress", "revision", "device", "dtype", "final_norm")
    assert inspect.signature(bimodality).parameters["limit"].default == 128
    assert get("bimodality").options()["max_length"] == 128 and get("extreme-prompts").options()["limit"] == 64
    assert get("sublayers").options()["batch_size"] == 16 and "final_norm" not in get("sublayers").options()
    assert get("vision").options()["dataset"] == "digits" and "max_length" not in get("vision").options()
    assert all("revision" not in get(name).options() for name in ("checkpoints", "sizes", "compare-finetune"))
    with pytest.raises(LayerscopeError, match="no option.*colour") as error:
        bimodality(llama, PROMPTS, colour="red", progress=False)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_declared_options_read_from_the_source_are_the_function_options(name):
    """What ``layerscope experiment --help`` lists (the source, read without importing the module) is what the
    imported function takes, less the common options."""
    from layerscope.experiments import COMMON_OPTIONS

    experiment = EXPERIMENTS[name]
    declared, options = experiment.declared_options(), list(experiment.options())
    assert [key for key in declared if key not in COMMON_OPTIONS] == [key for key in options if key not in COMMON_OPTIONS]
    assert declared == [key for key in options if key in declared]  # the signature's own names, in its order


def test_train_tiny_options_reach_training_and_progression(monkeypatch, tmp_path):
    import inspect

    from layerscope.experiments import run_experiment, train_tiny

    seen = {}
    names = list(inspect.signature(train_tiny._train).parameters)

    def fake_train(*args):
        seen.update(zip(names, args, strict=True))
        raise RuntimeError("stop")

    monkeypatch.setattr(train_tiny, "_train", fake_train)
    with pytest.raises(RuntimeError, match="stop"):
        run_experiment("train-tiny", out=tmp_path, batch_size=4, minutes=1, eval_batch_size=2, progress=False)
    # the training gets its batch size; the progression's is eval_batch_size
    assert seen["batch_size"] == 4 and seen["minutes"] == 1 and seen["progress"] is False


def test_run_cli_writes_outputs_and_summary(llama, tmp_path, monkeypatch):
    from layerscope import experiments

    returned = []

    def keep(*args, **kwargs):
        returned.append(run_experiment(*args, **kwargs))
        return returned[-1]

    run_experiment = experiments.run_experiment
    monkeypatch.setattr(experiments, "run_experiment", keep)
    out = experiments.run_cli("extreme-prompts", model=llama, texts=PROMPTS, probabilities="0,1",
                              perturbations="repetition", prefix_lengths="4,8", progress=False, out=tmp_path / "ep",
                              limit=None)
    assert out == tmp_path / "ep"
    (result,) = returned
    written = json.loads((out / "extreme_prompts_summary.json").read_text())
    # the JSON holds the result's own summary, plots, runs and table columns
    assert written["summary"] == json.loads(json.dumps(result.summary))
    assert set(written["summary"]["prompt_entropy_maxEntropy"]["repetition"]) == {"p=0", "p=1"}
    assert written["plots"] == [str(path) for path in result.plots] and len(result.plots) == 2
    assert all(_png_ok(Path(path)) for path in written["plots"])
    assert written["run_ids"] == result.run_ids
    assert written["tables"] == {name: list(frame.columns) for name, frame in result.tables.items()}
    assert written["options"]["probabilities"] == "0,1" and written["experiment"] == "extreme-prompts"
    # ... and the summary's numbers are the stored ones: prompt entropy at p = 1, last layer (100 % depth)
    with ResultsStore(out, read_only=True) as store:
        assert list(store.runs()["run_id"]) == result.run_ids
        assert set(store.runs()["status"]) == {"finished"}
        rows = store.experiment_values(experiment="extreme_prompts")
    last = rows[(rows["condition"] == "perturbation=repetition, p=1.0") & (rows["key"] == "prompt_entropy:maxEntropy")
                & (rows["layer"] == llama.num_layers)]
    assert written["summary"]["prompt_entropy_maxEntropy"]["repetition"]["p=1"]["100%"] == \
        pytest.approx(round(float(last["value"].iloc[0]), 4))


def test_cli_common_options_reach_the_experiment(tmp_path):
    """layerscope experiment: the shared options (declared by the configs) reach the run's recorded configuration."""
    from typer.testing import CliRunner

    from layerscope.cli import app

    folder = tmp_path / "model"
    _save_checkpoint(tiny_model("gpt2", num_layers=2), folder)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["experiment", "bimodality", "-m", str(folder), "-d", str(texts), "--limit", "6",
                                      "--max-length", "16", "--batch-size", "2", "--device", "cpu", "--dtype",
                                      "float32", "--seed", "3", "--set", "bins=5", "--no-report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with ResultsStore(out, read_only=True) as store:
        (run_id,) = store.runs()["run_id"]
        config = store.run_config(run_id)
        assert len(store.prompt_values()) == 6 * 3  # 6 texts x 3 layers
    assert config["kind"] == "experiment" and config["experiment"] == "bimodality"
    assert config["model"]["model"] == str(folder) and config["model"]["device"] == "cpu"
    assert config["model"]["dtype"] == "float32" and config["model_info"]["dtype"] == "float32"
    assert config["extraction"] == {**config["extraction"], "max_length": 16, "batch_size": 2, "final_norm": "none"}
    assert config["texts"] == {**config["texts"], "dataset": str(texts), "limit": 6, "seed": 3}
    assert config["seed"] == 3 and config["options"]["bins"] == 5
    # the recorded configuration reads back as the typed one
    from layerscope.experiments.base import ExperimentConfig

    assert ExperimentConfig.from_dict(config).to_dict() == config


# ------------------------------------------------------------------------------------------ extreme prompts


@pytest.fixture(scope="module")
def extreme(llama, tmp_path_factory):
    from layerscope.experiments.extreme_prompts import extreme_prompts

    out = tmp_path_factory.mktemp("extreme")
    return extreme_prompts(llama, PROMPTS, probabilities=(0, 0.5, 1), prefix_lengths=(4, 8, 16), out=out,
                           progress=False)


def test_extreme_prompts_tables(extreme, llama):
    table = extreme["prompt_entropy"]
    n_layers = llama.num_layers + 1
    # 2 perturbations x 3 probabilities x layers x 2 normalizations
    assert len(table) == 2 * 3 * n_layers * 2
    assert set(table["perturbation"]) == {"repetition", "randomness"}
    assert set(table["p"]) == {0.0, 0.5, 1.0}
    assert table["value"].notna().all()
    p0 = table[table["p"] == 0]
    # p = 0 is the same (unperturbed) run for both perturbations: one table copied, so exact
    by_kind = [rows.sort_values(["layer", "normalization"])["value"].to_numpy() for _, rows in p0.groupby("perturbation")]
    np.testing.assert_array_equal(*by_kind)
    length = extreme["length"]
    assert set(length["prefix_length"]) == {4, 8, 16}
    assert len(length) == 3 * n_layers * 2
    # a prefix of 8 tokens needs prompts of at least 8 tokens
    counts = extreme["token_counts"]["n_tokens"].to_numpy()
    used = length[(length["prefix_length"] == 8) & (length["layer"] == 0)]["n_used"].iloc[0]
    assert used == int((counts >= 8).sum())
    assert not extreme["length_buckets"].empty  # the prompts have different lengths


def test_extreme_prompts_store_and_plots(extreme):
    rows = _experiment_rows(extreme.out, "extreme_prompts")
    assert "perturbation=repetition, p=0.5" in set(rows["condition"])
    assert {"prompt_entropy:maxEntropy", "prefix_entropy:raw"} <= set(rows["key"])
    assert len(extreme.plots) == 2 and all(_png_ok(path) for path in extreme.plots)
    assert {path.name for path in extreme.plots} == {"extreme_prompts_perturbations.png", "extreme_prompts_length.png"}


@pytest.mark.numeric
def test_p0_matches_the_ordinary_unperturbed_run(extreme, llama):
    from layerscope.metrics.compute import compute_metrics

    reference = compute_metrics(llama, PROMPTS, metrics="prompt_entropy", max_length=128, progress=False)
    reference = reference[reference["normalization"].isin(["maxEntropy", "raw"])]
    ours = extreme["prompt_entropy"]
    ours = ours[(ours["p"] == 0) & (ours["perturbation"] == "repetition")]
    merged = ours.merge(reference, on=["layer", "normalization"], suffixes=("", "_reference"))
    assert len(merged) == len(ours)
    np.testing.assert_allclose(merged["value"], merged["value_reference"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["repetition", "randomness"])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_perturbations_keep_token_counts_and_special_tokens(llama, kind, p):
    from layerscope.experiments.extreme_prompts import perturb_token_ids, tokenize_prompts

    token_ids, perturbable = tokenize_prompts(llama, PROMPTS, max_length=128)
    perturbable[0][0] = False  # protect a position as if it were a BOS token
    out = perturb_token_ids(token_ids, perturbable, kind, p, vocab_size=len(llama.tokenizer), seed=3)
    assert [len(ids) for ids in out] == [len(ids) for ids in token_ids]
    assert out[0][0] == token_ids[0][0]
    if p == 0:
        assert out == token_ids
    if kind == "repetition":
        for original, perturbed, allowed in zip(token_ids, out, perturbable, strict=True):
            pool = {token for token, ok in zip(original, allowed, strict=True) if ok}
            assert all(token in pool or not ok for token, ok in zip(perturbed, allowed, strict=True))
    # seeded
    assert perturb_token_ids(token_ids, perturbable, kind, p, len(llama.tokenizer), seed=3) == out


@pytest.mark.numeric
def test_skip_first_tokens_measures_the_other_tokens():
    from layerscope.experiments.hooks import SkipFirstTokens, token_hook
    from layerscope.metrics import functional as F

    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([6, 4, 2, 1])
    states = torch.randn(3, 4, 6, 8, generator=generator)  # (layers, prompts, tokens, dim)
    states *= (torch.arange(6)[None, :] < lengths[:, None])[None, :, :, None]  # right padding with zeros
    hook = token_hook(4, normalizations=("raw",), skip_tokens=1)
    assert isinstance(hook, SkipFirstTokens)
    hook(states, lengths, torch.arange(4))
    values = hook.compute()["prompt_entropy"].per_prompt["raw"]  # (layers, prompts)
    for prompt, length in enumerate(lengths.tolist()):
        if length - 1 < 2:  # fewer than 2 tokens left: skipped
            assert np.isnan(values[:, prompt]).all()
            continue
        expected = F.prompt_entropy_values(states[:, prompt: prompt + 1, 1:length])[:, 0]
        np.testing.assert_allclose(values[:, prompt], expected.numpy(), rtol=1e-10)
    with pytest.raises(LayerscopeError, match="skip_tokens"):
        SkipFirstTokens(hook, -1)


@pytest.mark.numeric
def test_skip_tokens_agree_across_experiments():
    from layerscope.experiments.extreme_prompts import extreme_prompts
    from layerscope.experiments.sublayers import sublayers

    model = tiny_model("gpt2", num_layers=2)
    extreme = extreme_prompts(model, PROMPTS, probabilities=(0,), perturbations="repetition", prefix_lengths=None,
                              skip_tokens=1, progress=False)["prompt_entropy"]
    table = sublayers(model, PROMPTS, skip_tokens=1, progress=False)["sublayers"]
    ours = table[(table["metric"] == "prompt_entropy") & (table["normalization"] == "maxEntropy")
                 & table["sublayer"].isin(["resid_pre", "resid_post"])].sort_values("layer")
    reference = extreme[extreme["normalization"] == "maxEntropy"].sort_values("layer")
    np.testing.assert_allclose(ours["value"].to_numpy(), reference["value"].to_numpy(), rtol=1e-6)
    full = extreme_prompts(model, PROMPTS, probabilities=(0,), perturbations="repetition", prefix_lengths=None,
                           progress=False)["prompt_entropy"]
    # automatic prefix lengths count the measured tokens: none longer than the longest prompt minus k
    texts = ["one two three four five six seven eight"] * 3  # 8 tokens or more with the tiny tokenizer
    tokens = len(model.tokenizer(texts[0])["input_ids"])
    length = extreme_prompts(model, texts, probabilities=(0,), perturbations="repetition", skip_tokens=tokens - 7,
                             progress=False)["length"]
    assert set(length["prefix_length"]) == {4} and length["value"].notna().all()
    assert not np.allclose(full["value"].to_numpy(), extreme["value"].to_numpy())


def test_extreme_prompts_bad_input(llama):
    from layerscope.experiments.extreme_prompts import extreme_prompts

    with pytest.raises(LayerscopeError, match="unknown perturbation"):
        extreme_prompts(llama, PROMPTS, perturbations="shuffle", progress=False)
    with pytest.raises(LayerscopeError, match=r"\[0, 1\]"):
        extreme_prompts(llama, PROMPTS, probabilities="0,1.5", progress=False)


# ------------------------------------------------------------------------------------------ sublayers


@pytest.mark.numeric
def test_sublayers_experiment(tmp_path):
    from layerscope.experiments.sublayers import SUBLAYER_POINTS, sublayers
    from layerscope.metrics.compute import compute_metrics

    model = tiny_model("gpt_neox", num_layers=3)
    result = sublayers(model, PROMPTS, out=tmp_path, progress=False, batch_size=3)
    table = result["sublayers"]
    # per metric row set: 1 embedding + 4 points x L blocks; prompt entropy has 2 normalizations
    per_metric = table.groupby(["metric", "normalization"]).size()
    assert (per_metric == 1 + 4 * model.num_layers).all()
    assert set(per_metric.index) == {("prompt_entropy", "maxEntropy"), ("prompt_entropy", "raw"),
                                     ("prompt_effective_rank", "raw"), ("dataset_entropy", "maxEntropy"),
                                     ("effective_rank", "raw")}
    assert SUBLAYER_POINTS == ("attn_out", "resid_mid", "mlp_out", "resid_post")
    assert set(table["sublayer"]) == {"resid_pre", *SUBLAYER_POINTS}
    assert set(table.loc[table["sublayer"] == "resid_pre", "layer"]) == {0}  # block 1's input only
    assert table["value"].notna().all()
    # resid_post is the canonical residual stream: same prompt entropy as compute_metrics
    reference = compute_metrics(model, PROMPTS, metrics="prompt_entropy", progress=False)
    reference = reference[reference["normalization"] == "maxEntropy"].set_index("layer")["value"]
    ours = table[(table["metric"] == "prompt_entropy") & (table["normalization"] == "maxEntropy")]
    residual = ours[ours["sublayer"].isin(["resid_pre", "resid_post"])].set_index("layer")["value"]
    np.testing.assert_allclose(residual.sort_index().to_numpy(), reference.sort_index().to_numpy(), rtol=1e-6)
    # effective rank of a prompt's tokens is at least exp(its entropy) (SPEC section 4)
    ranks = table[table["metric"] == "prompt_effective_rank"]["value"].to_numpy()
    assert (ranks >= 1.0).all()
    rows = _experiment_rows(tmp_path, "sublayers")
    assert set(rows["condition"]) == {"resid_pre", *SUBLAYER_POINTS}
    assert [path.name for path in result.plots] == ["sublayers.png"] and _png_ok(result.plots[0])
    assert result.summary["style"] == "gpt_neox"


def test_sublayers_unsupported_family():
    from layerscope.experiments.sublayers import sublayers

    with pytest.raises(LayerscopeError, match="does not know the block structure of 'mamba'"):
        sublayers(tiny_model("mamba", num_layers=2), PROMPTS, progress=False)


# ------------------------------------------------------------------------------------------ bimodality


def test_bimodality_coefficient_matches_its_definition():
    from scipy.stats import kurtosis, skew

    from layerscope.experiments.bimodality import BIMODAL_THRESHOLD, bimodality_coefficient

    rng = np.random.default_rng(0)
    samples = rng.normal(size=(4, 200))
    samples[1, :100] += 8.0  # two well separated modes
    samples[2] = rng.uniform(size=200)
    samples[3, 150:] = np.nan  # missing values are ignored
    coefficient = bimodality_coefficient(samples)
    for row, value in zip(samples, coefficient, strict=True):
        x = row[np.isfinite(row)]
        n = len(x)
        g1, g2 = skew(x, bias=False), kurtosis(x, bias=False)
        assert value == pytest.approx((g1**2 + 1) / (g2 + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))), rel=1e-10)
    assert coefficient[1] > BIMODAL_THRESHOLD > coefficient[0]
    assert coefficient[2] == pytest.approx(5 / 9, abs=0.06)  # uniform: 5/9
    assert np.isnan(bimodality_coefficient(np.array([1.0, 2.0, 3.0])))  # n < 4
    assert np.isnan(bimodality_coefficient(np.ones(10)))  # constant


def test_two_groups_tell_a_second_mode_from_an_outlier():
    from layerscope.experiments.bimodality import BIMODAL_THRESHOLD, bimodality_coefficient, two_group_split

    rng = np.random.default_rng(1)
    unimodal = rng.normal(0.8, 0.02, size=128)
    outlier = unimodal.copy()
    outlier[7] = 0.3  # one prompt far below the rest: skewed and heavy-tailed, one mode
    bimodal = np.concatenate([rng.normal(0.3, 0.02, size=40), rng.normal(0.8, 0.02, size=88)])
    assert bimodality_coefficient(outlier) > BIMODAL_THRESHOLD  # the coefficient alone is fooled
    split = two_group_split(outlier)
    assert split["minor_share"] == pytest.approx(1 / 128) and 0.3 < split["cut"] < 0.75
    split = two_group_split(bimodal)
    assert split["minor_share"] == pytest.approx(40 / 128) and split["ashman_d"] > 2
    assert 0.35 < split["cut"] < 0.75
    assert two_group_split(unimodal)["ashman_d"] < 3  # a normal sample splits into overlapping halves
    assert np.isnan(two_group_split(np.array([1.0]))["minor_share"])


def test_bimodality_flags_need_a_second_mode(monkeypatch):
    from layerscope.experiments import bimodality as module
    from layerscope.metrics.compute import Measurement

    rng = np.random.default_rng(2)
    layers = np.stack([
        rng.normal(0.8, 0.02, size=64),  # unimodal
        np.concatenate([rng.normal(0.8, 0.02, size=63), [0.2]]),  # one outlier
        np.concatenate([rng.normal(0.3, 0.02, size=20), rng.normal(0.8, 0.02, size=44)]),  # two modes
    ])
    frame = pd.DataFrame([{"layer": layer, "prompt_index": i, "metric": "prompt_entropy", "normalization": "maxEntropy",
                           "value": float(value)} for layer, row in enumerate(layers) for i, value in enumerate(row)])
    computed = pd.DataFrame({"layer": [0], "depth_pct": [0.0], "metric": ["prompt_entropy"],
                             "normalization": ["maxEntropy"], "value": [0.0], "n_used": [64], "n_skipped": [0]})

    def fake_measure(*_args, **_kwargs):
        return Measurement(computed, frame, None, None)

    monkeypatch.setattr("layerscope.metrics.compute.measure", fake_measure)
    model = tiny_model("llama", num_layers=2)
    result = module.bimodality(model, [f"prompt number {i}" for i in range(64)], progress=False)
    table = result["coefficients"]
    assert list(table["above_threshold"]) == [False, True, True]
    assert list(table["bimodal"]) == [False, False, True]
    assert result.summary["bimodal_layers"] == [2] and result.summary["above_threshold_layers"] == [1, 2]


def test_bimodality_experiment(tmp_path):
    from layerscope.experiments.bimodality import bimodality

    model = tiny_model("gpt2", num_layers=3)
    prompts = PROMPTS * 2
    result = bimodality(model, prompts, out=tmp_path, progress=False)
    coefficients = result["coefficients"]
    assert list(coefficients["layer"]) == list(range(model.num_layers + 1))
    assert (coefficients["n"] == len(prompts)).all()
    assert coefficients["bimodal"].dtype == bool
    assert result.summary["bimodal_layers"] == [int(layer) for layer in coefficients.loc[coefficients["bimodal"], "layer"]]
    per_prompt = result["per_prompt"]
    assert len(per_prompt) == len(prompts) * (model.num_layers + 1)
    histograms = result["histograms"]
    assert (histograms.groupby("layer")["count"].sum() == len(prompts)).all()
    assert coefficients["length_spearman"].notna().all()  # lengths vary
    with ResultsStore(tmp_path, read_only=True) as store:
        assert len(store.prompt_values(metric="prompt_entropy")) == len(per_prompt)
        assert {"bimodality_coefficient", "bimodal"} <= set(store.experiment_values(experiment="bimodality")["key"])
    assert {path.name for path in result.plots} == {"bimodality_histograms.png", "bimodality_coefficient.png"}
    assert all(_png_ok(path) for path in result.plots)
    with pytest.raises(LayerscopeError, match="per-prompt metric"):
        bimodality(model, prompts, metric="dime", progress=False)


# ------------------------------------------------------------------------------------------ compare finetune


@pytest.mark.numeric
def test_compare_finetune(tmp_path):
    from layerscope.experiments.finetune import compare_finetune

    base, finetuned = tiny_model("llama", num_layers=3, seed=0), tiny_model("llama", num_layers=3, seed=1)
    result = compare_finetune(base, finetuned, PROMPTS, prefix_lengths="4,8,16", out=tmp_path, progress=False)
    entropy = result["prompt_entropy"]
    n_layers = base.num_layers + 1
    assert len(entropy) == 2 * n_layers * 2  # models x layers x (maxEntropy, raw)
    assert set(entropy["role"]) == {"base", "finetuned"}
    assert (entropy["std"] >= 0).all() and (entropy["q25"] <= entropy["q75"]).all()
    prefix = result["prefix_entropy"]
    assert len(prefix) == 2 * 3 * n_layers * 2
    per_prompt = result["per_prompt"]
    assert len(per_prompt) == 2 * n_layers * 2 * len(PROMPTS)
    difference = result["difference"]
    pivot = entropy.pivot_table(index=["layer", "normalization"], columns="role", values="mean")
    expected = (pivot["finetuned"] - pivot["base"]).sort_index().to_numpy()
    np.testing.assert_allclose(difference.sort_values(["layer", "normalization"])["difference"], expected)
    assert len(result.run_ids) == 2 and len(set(result.run_ids)) == 2
    rows = _experiment_rows(tmp_path, "compare_finetune")
    assert {"prompt_entropy:maxEntropy:mean", "prefix_entropy:raw:std"} <= set(rows["key"])
    assert {path.name for path in result.plots} == {"compare_finetune_prompt_entropy.png",
                                                    "compare_finetune_prefix_entropy.png"}
    with pytest.raises(LayerscopeError, match="labels"):
        compare_finetune(base, finetuned, PROMPTS, labels="only-one", progress=False)


def test_compare_finetune_different_depths_have_no_difference_table():
    from layerscope.experiments.finetune import compare_finetune

    result = compare_finetune(tiny_model("llama", num_layers=2), tiny_model("qwen2", num_layers=4), PROMPTS[:4],
                              prefix_lengths=(4,), progress=False)
    assert result["difference"].empty
    assert set(result["prompt_entropy"].groupby("role")["layer"].max()) == {2, 4}


# ------------------------------------------------------------------------------------------ checkpoints and sizes


def test_valley_shape():
    from layerscope.experiments.curves import valley

    found = valley([0.9, 0.6, 0.4, 0.5, 0.8])
    assert found["present"] and found["min_layer"] == 2 and found["min_depth_pct"] == 50.0
    assert found["valley_depth"] == pytest.approx(0.4)
    assert not valley([0.9, 0.8, 0.7, 0.6])["present"]  # monotone: no valley
    assert valley([0.9, 0.8, 0.7, 0.6])["valley_depth"] < 0
    assert valley([1.0, 0.5])["min_layer"] is None


def _save_checkpoint(model, folder: Path) -> None:
    model.model.save_pretrained(str(folder))
    model.tokenizer.save_pretrained(str(folder))


def test_resolve_checkpoints(tmp_path):
    from layerscope.experiments.checkpoints import resolve_checkpoints

    for step, seed in ((0, 0), (10, 1), (2, 2)):
        _save_checkpoint(tiny_model("gpt_neox", num_layers=2, seed=seed), tmp_path / f"step{step}")
    entries = resolve_checkpoints(str(tmp_path))
    assert [entry.label for entry in entries] == ["step0", "step2", "step10"]
    # folders are read as they are; the checkpoint name is recorded as the revision
    assert all(entry.revision == entry.label and Path(str(entry.model)).is_dir() for entry in entries)
    chosen = resolve_checkpoints(str(tmp_path), "step10,step0")
    assert [entry.label for entry in chosen] == ["step10", "step0"]
    hub = resolve_checkpoints("EleutherAI/pythia-70m", ["step1", "step143000"])
    assert [(entry.model, entry.revision) for entry in hub] == [("EleutherAI/pythia-70m", "step1"),
                                                                ("EleutherAI/pythia-70m", "step143000")]
    with pytest.raises(LayerscopeError, match="needs revisions"):
        resolve_checkpoints("EleutherAI/pythia-70m")


def test_entropy_valleys_follow_each_curve_in_layer_order():
    from layerscope.experiments.curves import entropy_valleys, main_normalization, valley

    main = main_normalization("prompt_entropy")
    curves = {"a": [0.9, 0.5, 0.7, 0.8], "b": [0.4, 0.6, 0.3, 0.2]}
    rows = [{"model": label, "layer": layer, "metric": "prompt_entropy", "normalization": main, "value": value}
            for label, curve in curves.items() for layer, value in enumerate(curve)]
    rows += [{"model": "a", "layer": 1, "metric": "prompt_entropy", "normalization": "raw", "value": -5.0},
             {"model": "a", "layer": 1, "metric": "curvature", "normalization": main, "value": -5.0}]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # rows out of layer order
    entropy, found, valleys = entropy_valleys(frame, "model", ["b", "a"])
    assert len(entropy) == 8 and list(found) == ["b", "a"]
    for label, curve in curves.items():
        np.testing.assert_array_equal(found[label], curve)  # copied values: exact
        assert valleys[label] == valley(curve)
    assert valleys["a"]["min_layer"] == 1 and valleys["b"]["present"] is False


def test_checkpoint_progression(tmp_path):
    from layerscope.experiments.checkpoints import checkpoint_progression

    folder = tmp_path / "ckpts"
    for step, seed in ((0, 0), (4, 1), (16, 2)):
        _save_checkpoint(tiny_model("gpt_neox", num_layers=3, seed=seed), folder / f"step{step}")
    out = tmp_path / "out"
    result = checkpoint_progression(str(folder), texts=PROMPTS, metrics="prompt_entropy,effective_rank", out=out,
                                    progress=False)
    metrics = result["metrics"]
    assert list(dict.fromkeys(metrics["checkpoint"])) == ["step0", "step4", "step16"]
    assert set(metrics["step"]) == {0, 4, 16}
    assert set(metrics["metric"]) == {"prompt_entropy", "effective_rank"}
    assert len(metrics[(metrics["metric"] == "prompt_entropy") & (metrics["normalization"] == "maxEntropy")]) == 3 * 4
    assert list(result["valley"]["checkpoint"]) == ["step0", "step4", "step16"]
    settling = result["settling"]
    assert len(settling) == 4 and (settling["settle_order"] <= 2).all()
    assert settling["settle_order"].iloc[-1] <= 2
    assert len(result.run_ids) == 3
    with ResultsStore(out, read_only=True) as store:
        runs = store.runs()
        assert len(runs) == 3 and set(runs["revision"]) == {"step0", "step4", "step16"}
        assert not store.metrics().empty
    names = {path.name for path in result.plots}
    assert names == {"checkpoints_metrics.png", "checkpoints_heatmap_prompt_entropy.png",
                     "checkpoints_heatmap_effective_rank.png"}
    assert "valley_deepens" in result.summary and "valley" in result.summary


def test_model_sizes(tmp_path):
    from layerscope.experiments.sizes import model_sizes

    small, large = tiny_model("llama", num_layers=2), tiny_model("llama", num_layers=4)
    result = model_sizes([large, small], PROMPTS, labels="large,small", metrics="prompt_entropy", out=tmp_path,
                         progress=False)
    metrics = result["metrics"]
    assert set(metrics["model"]) == {"large", "small"}
    assert metrics.groupby("model")["depth_pct"].max().eq(100.0).all()
    assert list(result["models"]["model"]) == ["small", "large"]  # ordered by parameters
    assert result.summary["models"] == ["small", "large"]
    assert len(result.run_ids) == 2
    assert [path.name for path in result.plots] == ["sizes_metrics.png"]
    with pytest.raises(LayerscopeError, match="labels"):
        model_sizes([small, large], PROMPTS, labels="a")
    with pytest.raises(LayerscopeError, match=r"model labels must be distinct, got \['same', 'same'\]"):
        model_sizes([small, large], PROMPTS, labels="same,same", out=tmp_path / "same", progress=False)


def test_loaded_checkpoints_without_distinct_revisions_are_refused(tmp_path):
    """Two loaded models labelled alike would merge into one curve; measure_models refuses them."""
    from layerscope.experiments.checkpoints import checkpoint_progression

    first, second = tiny_model("gpt_neox", num_layers=2, seed=0), tiny_model("gpt_neox", num_layers=2, seed=1)
    first.revision = second.revision = "main"
    with pytest.raises(LayerscopeError, match=r"checkpoint labels must be distinct, got \['main', 'main'\]"):
        checkpoint_progression([first, second], texts=PROMPTS, metrics="prompt_entropy", out=tmp_path,
                               progress=False)


# ------------------------------------------------------------------------------------------ train tiny


def test_log_spaced_checkpoint_steps():
    from layerscope.experiments.train_tiny import checkpoint_steps

    assert [step for step in range(70) if checkpoint_steps("log2", step)] == [0, 1, 2, 4, 8, 16, 32, 64]
    assert [step for step in range(20) if checkpoint_steps("3,10", step)] == [3, 10]
    assert [step for step in range(20) if checkpoint_steps([5], step)] == [5]


def test_train_tiny_then_progression(tmp_path):
    import layerscope as ls
    from layerscope.experiments.train_tiny import train_tiny_progression

    # a time budget of 12 seconds and at most 30 steps: whichever ends first (30 steps take about 1 s)
    result = train_tiny_progression(
        tmp_path, minutes=0.2, max_steps=30, texts=PROMPTS * 8, n_heldout=8, num_layers=2, hidden_size=32, num_heads=4,
        vocab_size=300, seq_len=32, batch_size=8, learning_rate=3e-3, warmup_steps=5, checkpoints="0,8",
        progress=False, metrics="prompt_entropy", max_length=32,
    )
    checkpoints = result["checkpoints"]
    steps = list(checkpoints["step"])
    assert steps[0] == 0 and steps == sorted(steps)
    assert set(steps[:-1]) <= {0, 8}  # the chosen steps, then the last step
    assert 1 <= steps[-1] == result.summary["steps"] <= 30
    assert result.summary["train_seconds"] < 12 + 10  # the budget, plus at most the step and save running at its end
    for path in checkpoints["path"]:
        assert (Path(path) / "config.json").is_file() and (Path(path) / "tokenizer.json").is_file()
    loaded = ls.load_model(checkpoints["path"].iloc[-1])
    assert loaded.adapter.family == "gpt_neox" and loaded.num_layers == 2 and loaded.hidden_size == 32
    assert len(loaded.tokenizer) == 300
    # the model learns: held-out loss and training loss go down
    assert checkpoints["val_loss"].iloc[-1] < checkpoints["val_loss"].iloc[0]
    log = result["log"]
    assert log["loss"].iloc[-5:].mean() < log["loss"].iloc[:5].mean()
    assert (tmp_path / "heldout.jsonl").is_file() and (tmp_path / "train_tiny.json").is_file()
    # the progression ran on every checkpoint, offline, with the held-out texts
    progression = result["progression_metrics"]
    assert list(dict.fromkeys(progression["checkpoint"])) == [f"step{step}" for step in steps]
    assert not math.isnan(progression["value"].mean())
    names = {path.name for path in result.plots}
    assert {"train_tiny_loss.png", "checkpoints_metrics.png", "checkpoints_heatmap_prompt_entropy.png"} <= names
    with ResultsStore(tmp_path, read_only=True) as store:
        assert {"train_loss", "val_loss"} <= set(store.experiment_values(experiment="train_tiny")["key"])
        assert not store.experiment_values(experiment="checkpoints").empty


# ------------------------------------------------------------------------------------------ conformance


@pytest.fixture(scope="module")
def checkpoint_folder(tmp_path_factory) -> Path:
    """Two saved tiny GPT-NeoX checkpoints, as a training run leaves them."""
    folder = tmp_path_factory.mktemp("conformance-checkpoints")
    for step, seed in ((0, 0), (8, 1)):
        _save_checkpoint(tiny_model("gpt_neox", num_layers=2, seed=seed), folder / f"step{step}")
    return folder


def _conformance_options(name: str, llama, checkpoint_folder: Path) -> dict:
    """Small options of each registered experiment: tiny models, 8 prompts, seconds each."""
    few = {"texts": PROMPTS, "limit": None}
    options = {
        "checkpoints": {"model": str(checkpoint_folder), "metrics": "prompt_entropy,effective_rank", **few},
        "train-tiny": {"minutes": 0.2, "max_steps": 4, "texts": PROMPTS * 8, "n_heldout": 8, "num_layers": 2,
                       "hidden_size": 32, "num_heads": 4, "vocab_size": 300, "seq_len": 32, "batch_size": 8,
                       "checkpoints": "0,2", "metrics": "prompt_entropy", "max_length": 32, "threads": 1},
        "sizes": {"models": [llama, tiny_model("gpt2", num_layers=2)], "metrics": "prompt_entropy,effective_rank",
                  **few},
        "extreme-prompts": {"model": llama, "probabilities": "0,0.5", "prefix_lengths": "4,8", **few},
        "compare-finetune": {"base": llama, "finetuned": tiny_model("llama", num_layers=3, seed=1),
                             "prefix_lengths": "4,8", **few},
        "sublayers": {"model": llama, **few},
        "bimodality": {"model": llama, **few},
        "vision": {"model": tiny_model("vit", num_layers=2), "dataset": "digits", "limit": 60, "view_images": 8,
                   "n_views": 3},
    }
    if name not in options:
        pytest.fail(f"experiment '{name}' has no conformance options: add a small, fast set here")
    return options[name]


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """The numeric and boolean columns of a table, as floats; timings (``*_s``) left out (they never repeat)."""
    columns = [column for column in frame.columns
               if (pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]))
               and not str(column).endswith("_s")]
    return frame[columns].astype(float)


def _cells(tables: dict[str, pd.DataFrame]) -> set[tuple[int | None, float]]:
    """Every numeric cell of the tables as (its row's layer, value), and as (None, value) for rows without one."""
    cells: set[tuple[int | None, float]] = set()
    for frame in tables.values():
        numbers = _numeric(frame)
        layers = frame["layer"].tolist() if "layer" in frame.columns else [None] * len(frame)
        for column in numbers.columns:
            for layer, value in zip(layers, numbers[column].tolist(), strict=True):
                rounded = float(f"{value:.12g}")
                cells.add((None, rounded))
                if layer is not None:
                    cells.add((int(layer), rounded))
    return cells


def _stored_values(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The store's runs, and every stored number with its run, table and layer."""
    with ResultsStore(out, read_only=True) as store:
        runs = store.runs()
        parts = [store.experiment_values().assign(table="experiment_values"),
                 store.metrics().assign(table="layer_metrics"),
                 store.prompt_values().assign(table="prompt_values"),
                 store.scores().rename(columns={"main_score": "value"}).assign(table="task_scores")]
    values = pd.concat([part[["run_id", "table", "layer", "value"]] for part in parts], ignore_index=True)
    return runs, values


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_keeps_the_common_contract(name, llama, checkpoint_folder, tmp_path):
    """One contract for every registered experiment (like the metric conformance test)."""
    from PIL import Image

    from layerscope.experiments import ExperimentResult, get, run_experiment

    experiment = get(name)
    options = _conformance_options(name, llama, checkpoint_folder)
    out = tmp_path / "out"
    result = run_experiment(name, **options, out=out, progress=False)

    # an ExperimentResult of non-empty tables, finite where numeric
    assert isinstance(result, ExperimentResult) and result.experiment == experiment.key
    assert result.tables and result.out == out
    for table, frame in result.tables.items():
        assert isinstance(frame, pd.DataFrame) and len(frame) > 0, table
        numbers = _numeric(frame)
        assert np.isfinite(numbers.to_numpy()).all(), f"{table}: {numbers.columns[~np.isfinite(numbers).all()]}"
    # a summary that is strict JSON (no NaN)
    assert json.loads(json.dumps(result.summary, allow_nan=False)) == json.loads(json.dumps(result.summary))

    # its store runs exist, finished, and every stored number is a cell of its tables at the same layer
    runs, stored = _stored_values(out)
    assert result.run_ids and sorted(runs["run_id"]) == sorted(result.run_ids)
    assert set(runs["status"]) == {"finished"}
    for run_id in result.run_ids:
        assert (stored["run_id"] == run_id).any(), f"run {run_id} stored no values"
    assert np.isfinite(stored["value"].to_numpy(float)).all()
    cells = _cells(result.tables)
    untraced = [(row.table, row.layer, row.value) for row in stored.itertuples(index=False)
                if (None if pd.isna(row.layer) else int(row.layer), float(f"{row.value:.12g}")) not in cells]
    assert not untraced, f"{len(untraced)} stored values are in no table, e.g. {untraced[:3]}"

    # its PNG files, in the output folder, decode to real figures
    assert result.plots
    keys = {item.key for item in EXPERIMENTS.values()}
    for path in result.plots:
        assert path.parent == out and any(path.stem == key or path.stem.startswith(f"{key}_") for key in keys), path
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG" and image.size[0] >= 300 and image.size[1] >= 200, path.name
            assert image.convert("L").getextrema()[0] < 100, f"{path.name} is blank"

    # seeded: the same numbers again; the same configuration replaces its runs instead of adding some
    again = run_experiment(name, **options, out=out, progress=False)
    assert again.run_ids == result.run_ids and len(_stored_values(out)[0]) == len(runs)
    assert list(again.tables) == list(result.tables)
    for table, frame in result.tables.items():
        assert list(again[table].columns) == list(frame.columns), table
        np.testing.assert_allclose(_numeric(again[table]).to_numpy(), _numeric(frame).to_numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=table)

    # a bad option value, or an option the experiment does not have: one line, before any work
    for bad in ({"limit": 0}, {"colour": "red"}):
        with pytest.raises(LayerscopeError) as error:
            run_experiment(name, **{**options, **bad}, out=tmp_path / "bad", progress=False)
        assert "\n" not in str(error.value) and next(iter(bad)) in str(error.value)
    assert not (tmp_path / "bad" / "results.duckdb").exists()


# ------------------------------------------------------------------------------------------ slow: SmolLM2


@pytest.mark.slow
def test_smollm2_repetition_lowers_and_randomness_raises_prompt_entropy():
    """Full repetition compresses the middle layers; random tokens raise the early layers (trained model)."""
    import layerscope as ls
    from layerscope.experiments.extreme_prompts import extreme_prompts

    model = ls.load_model("smollm2-135m")
    texts = ls.load_texts("bbc", limit=24, seed=0)  # 3 passes of SmolLM2: about 35 s on 2 busy cores
    result = extreme_prompts(model, texts, probabilities=(0, 1), prefix_lengths=None, max_length=48, progress=False)
    table = result["prompt_entropy"]
    table = table[table["normalization"] == "maxEntropy"]

    def band(kind: str, p: float, low: float, high: float) -> float:
        rows = table[(table["perturbation"] == kind) & (table["p"] == p)]
        return float(rows[(rows["depth_pct"] >= low) & (rows["depth_pct"] <= high)]["value"].mean())

    assert band("repetition", 1.0, 25, 75) < band("repetition", 0.0, 25, 75)
    assert band("randomness", 1.0, 0, 25) > band("randomness", 0.0, 0, 25)
