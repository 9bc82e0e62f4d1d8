"""Vision models (SPEC section 7.8): image extraction, crops as views, linear probes, the experiment."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

import layerscope as ls
from layerscope.augment import random_resized_crops
from layerscope.data.images import load_images
from layerscope.evaluate.probe import linear_probe
from layerscope.extract import extract_images, prepare_images
from layerscope.metrics import functional as F
from layerscope.models.tiny import tiny_model

TOL = 1e-5  # float32 states of O(1) in other batch shapes or HF's own call: a few ulps (1.2e-7)


@pytest.fixture(scope="module")
def vit():
    return tiny_model("vit", num_layers=3)


@pytest.fixture(scope="module")
def digits():
    return load_images("digits", limit=40, seed=0)


# ------------------------------------------------------------------------------------------------ data


def test_digits_are_the_bundled_scikit_learn_images():
    data = load_images("digits")
    assert data.images.shape == (1797, 8, 8) and data.images.dtype == np.uint8
    assert data.images.max() == 255 and data.images.min() == 0
    assert sorted(set(data.labels.tolist())) == list(range(10)) and len(data.classes) == 10
    small = load_images("digits", limit=50, seed=3)
    assert len(small) == 50 and np.array_equal(small.images, load_images("digits", limit=50, seed=3).images)  # uint8


def test_image_folders_npz_and_idx_files(tmp_path):
    from PIL import Image

    for label, value in (("cat", 30), ("dog", 200)):
        (tmp_path / "folder" / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((5, 6, 3), value + i, dtype=np.uint8)).save(tmp_path / "folder" / label / f"{i}.png")
    folder = load_images(tmp_path / "folder")
    assert folder.classes == ["cat", "dog"] and folder.labels.tolist() == [0, 0, 1, 1] and len(folder.images) == 4
    np.savez(tmp_path / "data.npz", images=np.zeros((3, 4, 4), np.uint8), labels=np.array(["b", "a", "b"]))
    npz = load_images(tmp_path / "data.npz")
    assert npz.classes == ["a", "b"] and npz.labels.tolist() == [1, 0, 1]
    # Fashion-MNIST's IDX files (gzipped), read from a folder
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape) + images.tobytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes([7, 1]))
    fashion = load_images(f"fashion-mnist:{tmp_path}")
    assert np.array_equal(fashion.images, images) and fashion.labels.tolist() == [7, 1]  # uint8 read back: exact


@pytest.mark.parametrize(("source", "message"), [
    ("digit", "unknown image source 'digit' (did you mean 'digits'?)"),
    ("fashion-mnist:/nonexistent", "Fashion-MNIST files not found"),
    ("missing.npz", "file not found"),
])
def test_bad_image_sources(source, message):
    with pytest.raises(ls.LayerscopeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_images(source)


@pytest.mark.numeric
def test_prepare_images_sizes_channels_and_normalizes(vit, digits):
    pixels = prepare_images(vit, digits.images)
    assert pixels.shape == (40, 1, 28, 28) and pixels.dtype == torch.float32
    # ViT's default normalization maps [0, 1] to [-1, 1]
    assert float(pixels.min()) >= -1.0 - 1e-6 and float(pixels.max()) <= 1.0 + 1e-6
    # a uniform grey image stays uniform after resizing: (128 / 255 - 0.5) / 0.5
    grey = prepare_images(vit, np.full((1, 8, 8), 128, np.uint8))
    assert torch.allclose(grey, torch.full_like(grey, (128 / 255 - 0.5) / 0.5), atol=1e-6)
    # RGB channels-last arrays are averaged to the model's one channel; a list of PIL images gives the same
    from PIL import Image

    rgb = np.stack([digits.images[:3]] * 3, axis=-1)
    assert torch.allclose(prepare_images(vit, rgb), pixels[:3], atol=1e-6)
    assert torch.allclose(prepare_images(vit, [Image.fromarray(image) for image in digits.images[:3]]), pixels[:3],
                          atol=1e-6)
    with pytest.raises(ls.LayerscopeError, match="images must be"):
        prepare_images(vit, np.zeros((2, 2, 3, 4, 4)))
    with pytest.raises(ls.LayerscopeError, match="NaN"):
        prepare_images(vit, np.full((1, 8, 8), np.nan))


# ------------------------------------------------------------------------------------------ extraction


@pytest.mark.numeric
def test_extract_images_gives_every_layer_like_hugging_face(vit, digits):
    pixels = prepare_images(vit, digits.images[:6])
    result = extract_images(vit, pixels, prepared=True, progress=False)
    assert result.pooled.shape == (4, 6, 32) and result.layers == [0, 1, 2, 3]
    with torch.inference_mode():
        hf = vit.model(pixel_values=pixels, output_hidden_states=True)
    # layer 0 = embeddings (patches + CLS + positions); layer l = block l (HF's hidden_states[l] for l < L)
    for layer in range(3):
        np.testing.assert_allclose(result.pooled[layer], hf.hidden_states[layer].mean(1).numpy(), atol=TOL)
    # the raw last block, not HF's final-normed last entry; final_norm="all" gives last_hidden_state
    normed = tiny_model("vit", num_layers=3, final_norm="all")
    last = extract_images(normed, pixels, prepared=True, progress=False).pooled[3]
    np.testing.assert_allclose(last, hf.last_hidden_state.mean(1).numpy(), atol=TOL)
    assert not np.allclose(result.pooled[3], last, atol=1e-3)
    # CLS pooling, and independence from the batch
    cls = extract_images(vit, pixels, prepared=True, pooling="first", progress=False)
    np.testing.assert_allclose(cls.pooled[2], hf.hidden_states[2][:, 0].numpy(), atol=TOL)
    one_by_one = extract_images(vit, pixels, prepared=True, batch_size=1, progress=False)
    np.testing.assert_allclose(one_by_one.pooled, result.pooled, atol=TOL)


def test_image_token_hook_and_cache(vit, digits, tmp_path):
    pixels = prepare_images(vit, digits.images[:5])
    seen = []
    extract_images(vit, pixels, prepared=True, batch_size=2, progress=False,
                   token_hook=lambda states, lengths: seen.append((tuple(states.shape), lengths.tolist())))
    # 16 patches + CLS per image, every token real
    assert [shape for shape, _ in seen] == [(4, 2, 17, 32), (4, 2, 17, 32), (4, 1, 17, 32)]
    assert all(lengths == [17] * len(lengths) for _, lengths in seen)
    calls = []
    handle = vit.model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        first = extract_images(vit, pixels, prepared=True, cache_dir=str(tmp_path), progress=False)
        n_forward = len(calls)
        again = extract_images(vit, pixels, prepared=True, cache_dir=str(tmp_path), progress=False)
        assert again.from_cache and len(calls) == n_forward
        np.testing.assert_array_equal(np.asarray(again.pooled), np.asarray(first.pooled))  # the cache read back
        extract_images(vit, pixels[:4], prepared=True, cache_dir=str(tmp_path), progress=False)  # other images, other entry
        assert len(calls) > n_forward
    finally:
        handle.remove()


def test_text_and_image_entry_points_refuse_the_other_modality(vit):
    with pytest.raises(ls.LayerscopeError, match="extract_images"):
        ls.extract(vit, ["a text"])
    with pytest.raises(ls.LayerscopeError, match="layerscope.extract for texts"):
        extract_images(tiny_model("llama"), np.zeros((1, 8, 8), np.uint8))


# ------------------------------------------------------------------------------------------ crops


def test_random_resized_crops():
    torch.manual_seed(0)
    pixels = torch.rand(3, 1, 12, 10)
    views = random_resized_crops(pixels, 4, seed=0)
    assert views.shape == (4, 3, 1, 12, 10)
    assert torch.equal(random_resized_crops(pixels, 4, seed=0), views)  # the same call again: exact
    assert not torch.allclose(random_resized_crops(pixels, 4, seed=1), views)
    assert not torch.allclose(views[0], views[1])
    # the full box (its width / height is the image's 10 / 12), no flip: the images themselves; with
    # flips: each view is the image or its mirror
    same = random_resized_crops(pixels, 2, scale=(1.0, 1.0), ratio=(10 / 12, 10 / 12), flip=False)
    assert torch.allclose(same, pixels.expand(2, -1, -1, -1, -1), atol=1e-5)
    mirrored = random_resized_crops(pixels, 8, scale=(1.0, 1.0), ratio=(10 / 12, 10 / 12), seed=2)
    for view in mirrored:
        for image, original in zip(view, pixels, strict=True):
            assert torch.allclose(image, original, atol=1e-5) or torch.allclose(image, original.flip(-1), atol=1e-5)
    # a crop of a constant image is that constant; every crop lies inside the image (values in range)
    assert torch.allclose(random_resized_crops(torch.full((2, 3, 8, 8), 0.25), 3), torch.tensor(0.25))
    assert float(views.min()) >= float(pixels.min()) - 1e-6 and float(views.max()) <= float(pixels.max()) + 1e-6
    with pytest.raises(ls.LayerscopeError, match="scale"):
        random_resized_crops(pixels, 2, scale=(0.0, 1.0))
    with pytest.raises(ls.LayerscopeError, match="n_views"):
        random_resized_crops(pixels, 0)


# ------------------------------------------------------------------------------------------ metrics


@pytest.mark.numeric
def test_compute_metrics_on_images_matches_the_formulas(vit, digits):
    frame = ls.compute_metrics(vit, digits.images[:12], metrics="dataset_entropy,prompt_entropy,dime", n_views=2,
                               seed=0, progress=False)
    pixels = prepare_images(vit, digits.images[:12])
    pooled = extract_images(vit, pixels, prepared=True, progress=False).tensor()
    expected = F.dataset_entropy(pooled)
    got = frame.query("metric == 'dataset_entropy' and normalization == 'maxEntropy'").sort_values("layer")["value"]
    np.testing.assert_allclose(got.to_numpy(), expected.numpy(), atol=1e-8)
    # DiME on two crops of each image, encoded by the same model
    crops = random_resized_crops(pixels, 2, seed=0)
    view_a = extract_images(vit, crops[0], prepared=True, progress=False).tensor()
    view_b = extract_images(vit, crops[1], prepared=True, progress=False).tensor()
    dime = frame.query("metric == 'dime' and normalization == 'maxEntropy'").sort_values("layer")["value"]
    np.testing.assert_allclose(dime.to_numpy(), F.dime(view_a, view_b, seed=0).numpy(), atol=1e-8)
    # prompt entropy over each image's 17 tokens
    states = []
    extract_images(vit, pixels, prepared=True, progress=False, token_hook=lambda s, lengths: states.append(s.clone()))
    tokens = torch.cat(states, dim=1)  # (layers, images, 17, d)
    prompt = frame.query("metric == 'prompt_entropy' and normalization == 'maxEntropy'").sort_values("layer")["value"]
    np.testing.assert_allclose(prompt.to_numpy(), F.prompt_entropy(tokens).mean.numpy(), atol=1e-8)


def test_linear_probe_finds_the_informative_layer():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    noise = rng.normal(size=(120, 8))
    signal = noise.copy()
    signal[:, 0] += 10.0 * labels  # class written along one axis
    probe = linear_probe(np.stack([noise, signal]), labels, layers=[3, 7], seed=1)
    assert probe["layer"].tolist() == [3, 7]
    assert probe.loc[1, "accuracy"] == 1.0 and probe.loc[0, "accuracy"] < 0.7
    assert probe["n_train"].nunique() == 1 and probe.loc[0, "chance"] == pytest.approx(1 / 3, abs=0.02)
    np.testing.assert_array_equal(linear_probe(np.stack([noise, signal]), labels, seed=1)["accuracy"],
                                  probe["accuracy"])  # seeded: the same split and fit in this process, exact
    with pytest.raises(ls.LayerscopeError, match="2 classes"):
        linear_probe(np.stack([noise]), np.zeros(120, int))
    with pytest.raises(ls.LayerscopeError, match="at least 2 examples"):
        linear_probe(np.stack([noise[:4]]), np.array([0, 0, 0, 1]))
    with pytest.raises(ls.LayerscopeError, match="NaN"):
        linear_probe(np.full((1, 120, 8), np.nan), labels)


# ------------------------------------------------------------------------------------------ experiment


def test_vision_experiment_end_to_end(vit, tmp_path):
    from layerscope.experiments import run_experiment
    from layerscope.report import build_report
    from layerscope.store import ResultsStore

    result = run_experiment("vision", model=vit, dataset="digits", limit=80, view_images=12, n_views=4, out=tmp_path,
                            progress=False)
    probe = result["probe"]
    assert probe["layer"].tolist() == [0, 1, 2, 3] and probe["accuracy"].between(0, 1).all()
    assert result.summary["best_layer"] == int(probe.loc[probe["accuracy"].idxmax(), "layer"])
    metrics = result["metrics"]
    assert {"prompt_entropy", "dataset_entropy", "dime", "infonce", "lidar"} <= set(metrics["metric"])
    assert np.isfinite(metrics["value"]).all()
    assert int(metrics.query("metric == 'lidar'")["n_used"].iloc[0]) == 12
    assert {"last layer", "best layer (labels)", "min dime"} <= set(result["selection"]["rule"])
    with ResultsStore.in_directory(tmp_path, read_only=True) as store:
        scores = store.scores()
        stored = store.metrics()
        assert list(store.runs()["status"]) == ["finished"]
    # the store holds the result's numbers: the probe accuracies as task scores, every metric value
    assert set(scores["task"]) == {"linear probe (digits)"} and len(scores) == 4
    np.testing.assert_allclose(scores.sort_values("layer")["main_score"], probe["accuracy"], rtol=1e-12)
    key = ["metric", "normalization", "layer"]
    assert len(stored) == len(metrics)
    np.testing.assert_allclose(stored.sort_values(key)["value"], metrics.sort_values(key)["value"], rtol=1e-12)
    # one PNG: metrics and probe accuracy by depth, a real figure
    from PIL import Image

    assert [path.name for path in result.plots] == ["vision_layers.png"]
    with Image.open(result.plots[0]) as image:
        image.load()
        assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 300
        assert image.convert("L").getextrema()[0] < 100  # lines and text are drawn
    assert build_report(tmp_path).is_file()
    with pytest.raises(ls.LayerscopeError, match="needs a vision model"):
        run_experiment("vision", model=tiny_model("llama"), out=tmp_path)
