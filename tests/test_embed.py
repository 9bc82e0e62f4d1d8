"""Embeddings of one layer for a user's file, each row with its text's id (issue 12 point 4)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import layerscope as ls
from layerscope.config import ExtractConfig
from layerscope.data import load_rows
from layerscope.errors import LayerscopeError
from layerscope.export.embed import embed_layer
from layerscope.models.tiny import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("gpt2", num_layers=3)


@pytest.fixture
def table(tmp_path):
    frame = pd.DataFrame({"ticket": ["T-7", "T-9", "T-12", "T-15", "T-20"],
                          "text": ["printer on fire", "", "cannot log in after the update", None, "refund please"]})
    path = tmp_path / "tickets.csv"
    frame.to_csv(path, index=False)
    return path


def test_rows_keep_their_ids_through_blank_texts_and_subsets(table, tmp_path):
    rows = load_rows(table, id_column="ticket")
    # "" and a missing cell are no texts; pandas reads "" as missing too
    assert rows.texts == ["printer on fire", "cannot log in after the update", "refund please"]
    assert rows.ids == ["T-7", "T-12", "T-20"]
    assert load_rows(table).ids == [0, 2, 4]  # row positions by default
    text_file = tmp_path / "lines.txt"
    text_file.write_text("first\n\nthird\n   \nfifth\n")
    assert load_rows(text_file).ids == [0, 2, 4]
    subset = load_rows(table, limit=2, seed=1)
    assert all(load_rows(table).ids[load_rows(table).texts.index(text)] == row_id
               for text, row_id in zip(subset.texts, subset.ids, strict=True))
    with pytest.raises(LayerscopeError, match="no id column 'ticket_id'"):
        load_rows(table, id_column="ticket_id")


@pytest.mark.numeric
@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_embed_writes_the_layer_with_ids_and_resumes_from_the_cache(model, table, tmp_path, suffix):
    rows = load_rows(table, id_column="ticket")
    out = tmp_path / f"embeddings{suffix}"
    result = embed_layer(model, rows, 2, out, cache_dir=str(tmp_path / "cache"), chunk_size=2, progress=False)
    expected = ls.extract(model, rows.texts, layers=[2], progress=False).pooled[0]
    if suffix == ".parquet":
        frame = pd.read_parquet(out)
        ids, vectors = frame["id"].tolist(), np.stack(frame["embedding"].to_numpy())
    else:
        array = np.load(out, allow_pickle=False)
        ids, vectors = array["id"].tolist(), array["embedding"]
    assert ids == ["T-7", "T-12", "T-20"] and result.n_written == 3
    # chunks of 2 texts against one batch of 3: other padded shapes through float32 layers, a few ulps
    np.testing.assert_allclose(vectors, expected, rtol=1e-6, atol=1e-6)
    # a rerun reads every chunk from the cache: the model does not run
    calls = []
    handle = model.blocks[0].register_forward_hook(lambda *args: calls.append(1))
    try:
        embed_layer(model, rows, 2, out, cache_dir=str(tmp_path / "cache"), chunk_size=2, progress=False)
    finally:
        handle.remove()
    assert not calls


def test_embed_normalizes_and_refuses_what_it_does_not_do(model, table, tmp_path):
    rows = load_rows(table)
    out = tmp_path / "unit.npy"
    embed_layer(model, rows, -1, out, extraction=ExtractConfig(normalize=True), progress=False)
    vectors = np.load(out)["embedding"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(LayerscopeError, match="parquet or .npy"):
        embed_layer(model, rows, 1, tmp_path / "x.csv", progress=False)
    with pytest.raises(LayerscopeError, match=r"give the conditioning in a recipe, e.g. --recipe 'last\+standardize'"):
        embed_layer(model, rows, 1, out, extraction=ExtractConfig(condition="whiten"), progress=False)


def test_extract_command_records_each_embedding_s_row(model, table, tmp_path):
    from typer.testing import CliRunner

    from layerscope.cli import app

    model.model.save_pretrained(str(tmp_path / "model"))
    model.tokenizer.save_pretrained(str(tmp_path / "model"))
    result = CliRunner().invoke(app, ["extract", "--model", str(tmp_path / "model"), "--dataset", str(table),
                                      "--id-column", "ticket", "--out", str(tmp_path / "out"), "--no-cache"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["row_ids"] == ["T-7", "T-12", "T-20"]
    assert np.load(tmp_path / "out" / "embeddings.npy").shape[1] == 3
