"""The documentation: pages and nav agree, links resolve, every command shown exists, the layer diagram is the contract.

``make docs`` (``mkdocs build --strict``) checks the rendered site: links between pages, anchors, the
API reference. This test checks, in a second and without mkdocs, what the build does not see or does
not know: README.md (not part of the site), whether every ``layerscope ...`` command line and option
shown in README.md and docs/ is one the CLI has (read from the Typer app; no model is loaded), and
whether the layer diagram of docs/architecture.md is the one tests/test_architecture.py enforces.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
#: docs/ folders that hold the build's own code, not pages (mkdocs.yml's exclude_docs)
NOT_PAGES = ("_ext",)
README_MAX_LINES = 300

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"(`+)(?P<code>.+?)\1")
HEADING = re.compile(r"^(#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
#: a command line: optional prompt, optional path to the console script, then the command
COMMAND = re.compile(r"^(?:\$\s+)?(?:\S*/)?layerscope\s+(?P<rest>.*)$")


def pages() -> list[str]:
    """Every Markdown page under docs/, as its path relative to docs/ (posix)."""
    return sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")
                  if path.relative_to(DOCS).parts[0] not in NOT_PAGES)


def nav_pages(nav: Any) -> list[str]:
    """The page paths a mkdocs ``nav`` names, in order (nested sections flattened)."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    raise AssertionError(f"unexpected nav entry {nav!r}")


def documents() -> list[Path]:
    return [README, *(DOCS / page for page in pages())]


# ------------------------------------------------------------------------------------- reading Markdown


def split_fences(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(prose lines with fenced blocks blanked, [(info string, block lines)])."""
    prose, blocks = [], []
    fence: tuple[str, str, list[str]] | None = None  # (marker, info, lines)
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = (match[2], match[3].strip(), [])
            prose.append("")
        elif fence is not None and match and match[2].startswith(fence[0]) and not match[3].strip():
            blocks.append((fence[1], fence[2]))
            fence = None
            prose.append("")
        elif fence is not None:
            fence[2].append(line)
            prose.append("")
        else:
            prose.append(line)
    assert fence is None, "a fenced code block is not closed"
    return prose, blocks


def slugify(title: str) -> str:
    """The anchor Python-Markdown's ``toc`` extension (mkdocs) gives a heading; GitHub's agrees on
    headings without repeated spaces or hyphens, which these pages keep to."""
    text = re.sub(r"[`*_]", "", title)  # the rendered text: no code or emphasis marks
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    """The anchors a page defines: its headings' slugs, and for an API page the objects it renders."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    found = {slugify(match["title"]) for line in prose if (match := HEADING.match(line))}
    found |= {line.split(":::", 1)[1].strip() for line in prose if line.startswith(":::")}
    return found


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of every inline Markdown link outside code."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    for number, line in enumerate(prose, 1):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            yield number, match["target"]


def link_problem(source: Path, target: str) -> str | None:
    """Why a relative link from ``source`` does not resolve (None: it does, or it is not relative)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
        return None  # http(s), mailto: not checked here
    location, _, anchor = target.partition("#")
    file = (source.parent / location).resolve() if location else source
    if not file.is_file():
        return f"no file {location}"
    if anchor:
        if file.suffix != ".md":
            return f"an anchor into {location}, which is not a Markdown page"
        known = anchors(file)
        # an API page's anchors are the objects it renders and their members
        if anchor not in known and not any(anchor.startswith(name + ".") for name in known if "." in name):
            return f"no heading #{anchor} in {location or source.name}"
    return None


def command_lines(path: Path) -> Iterator[tuple[str, str]]:
    """(where, command line after 'layerscope') of every command shown in code: lines of fenced blocks
    that are not Python, and inline code spans."""
    text = path.read_text(encoding="utf-8")
    prose, blocks = split_fences(text)
    name = path.relative_to(ROOT).as_posix()
    for info, block in blocks:
        if info.split()[:1] in (["python"], ["pycon"], ["yaml"]):
            continue
        joined = re.sub(r"\\\n\s*", " ", "\n".join(block))  # shell continuation lines
        for line in joined.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line.strip())  # a shell comment after the command
            if match := COMMAND.match(line):
                yield f"{name}: {line}", match["rest"]
    for line in prose:
        for match in INLINE_CODE.finditer(line):
            code = match["code"].strip()
            if code.startswith("layerscope ") or code.startswith("$ layerscope "):
                yield f"{name}: `{code}`", COMMAND.match(code)["rest"]


# ------------------------------------------------------------------------------------------- the CLI


@cache
def cli_commands() -> dict[str, Any]:
    """'name' or 'group sub' -> the click command of the Typer app (imported here: the app is cheap
    to build, and nothing of it runs)."""
    import typer

    from layerscope.cli import app

    commands: dict[str, Any] = {}

    def walk(command: Any, prefix: str) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            full = f"{prefix} {name}".strip()
            commands[full] = sub
            walk(sub, full)

    walk(typer.main.get_command(app), "")
    return commands


@cache
def experiment_names() -> tuple[str, ...]:
    from layerscope.experiments import names

    return tuple(names())


def options_of(command: Any) -> set[str]:
    return {option for param in command.params for option in (*param.opts, *param.secondary_opts)} | {"--help"}


def _is_placeholder(token: str) -> bool:
    """NAME, DIR, M, FILE.parquet, <key>, ...: a value the reader fills in."""
    return token.startswith("<") or token in ("...", "-") or bool(re.match(r"^[A-Z][A-Z0-9_]*(\.\w+)?$", token))


def command_problem(rest: str) -> str | None:
    """Why ``layerscope <rest>`` is not a command line the CLI accepts (None: it is)."""
    from layerscope.config import parse_condition, parse_select_by
    from layerscope.errors import LayerscopeError

    tokens = [token.strip("[]") for token in rest.replace("\\|", "|").split()]
    tokens = [token for token in tokens if token]
    if not tokens or tokens[0].startswith("-"):
        return None if tokens[:1] in ([], ["--help"]) else f"{tokens[0]} before a command"
    commands = cli_commands()
    name = tokens[0]
    if name not in commands:
        return f"no command '{name}' (commands: {', '.join(sorted(c for c in commands if ' ' not in c))})"
    command, rest_tokens = commands[name], tokens[1:]
    if getattr(command, "commands", None) and rest_tokens and not rest_tokens[0].startswith("-"):
        sub = f"{name} {rest_tokens[0]}"
        if sub not in commands:
            return f"no command '{sub}'"
        command, rest_tokens = commands[sub], rest_tokens[1:]
    if name == "experiment" and rest_tokens and not rest_tokens[0].startswith("-") \
            and not _is_placeholder(rest_tokens[0]) and rest_tokens[0] not in experiment_names():
        return f"no experiment '{rest_tokens[0]}' (experiments: {', '.join(experiment_names())})"
    known = options_of(command)
    for index, token in enumerate(rest_tokens):
        if not token.startswith("-") or _is_placeholder(token) or re.match(r"^-\d", token):
            continue
        option, _, inline_value = token.partition("=")
        if option not in known:
            return f"'{name}' has no option {option}"
        value = inline_value or (rest_tokens[index + 1] if index + 1 < len(rest_tokens) else "")
        concrete = value and not value.startswith("-") and not _is_placeholder(value) \
            and not re.search(r"[|\[\]<>]", value)
        try:
            if option == "--select-by" and concrete:
                parse_select_by(value)
            elif option == "--condition" and concrete:
                parse_condition(value)
        except LayerscopeError as error:
            return f"{option} {value}: {error}"
    return None


# ------------------------------------------------------------------------------------------------ tests


def test_every_page_is_in_the_nav_and_the_nav_names_only_pages() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    named = nav_pages(config["nav"])
    assert sorted(set(named)) == sorted(named), "a page is named twice in mkdocs.yml's nav"
    assert [page for page in pages() if page not in named] == [], "pages missing from mkdocs.yml's nav"
    assert [page for page in named if page not in pages()] == [], "nav entries without a page in docs/"


def test_every_relative_link_resolves() -> None:
    problems = [f"{path.relative_to(ROOT).as_posix()}:{line}: ({target}) {problem}"
                for path in documents() for line, target in links(path)
                if (problem := link_problem(path, target))]
    assert problems == []


def test_the_readme_is_short_and_links_into_the_docs() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move the detail into docs/"
    linked = {target.partition("#")[0] for _, target in links(README)}
    # the guides a newcomer needs first are one click away
    for page in ("docs/getting-started.md", "docs/your-data.md", "docs/choosing-a-layer.md",
                 "docs/conditioning-and-export.md", "docs/research-findings.md", "docs/architecture.md"):
        assert page in linked, page


def test_every_command_shown_is_a_command_of_the_cli() -> None:
    shown = [(where, rest) for path in documents() for where, rest in command_lines(path)]
    assert len(shown) > 40  # the reader found the command lines (README and docs show dozens)
    problems = [f"{where}: {problem}" for where, rest in shown if (problem := command_problem(rest))]
    assert problems == []


def test_every_command_of_the_cli_is_shown() -> None:
    shown = {rest.split()[0] for path in documents() for _, rest in command_lines(path) if rest.split()}
    top_level = {name for name in cli_commands() if " " not in name}
    assert sorted(top_level - shown) == []


def test_the_layer_diagram_is_the_checked_contract() -> None:
    from test_architecture import LAYERS

    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    marker = text.index("<!-- layers:")
    _, blocks = split_fences(text[marker:])
    rows: list[tuple[int, str, list[str]]] = []
    for line in blocks[0][1]:
        if match := re.match(r"^\s+(\d+)\s{2,}(.+?)\s{2,}(.+?)\s*[│▼]?\s*$", line):
            rows.append((int(match[1]), match[2], [m.strip() for m in match[3].split(",") if m.strip()]))
        elif rows and line.strip() and not set(line.strip()) <= set("─ │▼"):  # a continued module list
            rows[-1][2].extend(m.strip() for m in line.strip().rstrip("│▼").split(",") if m.strip())
    drawn = [(index, name, sorted(modules)) for index, name, modules in reversed(rows)]
    expected = [(index, name, sorted(module.removeprefix("layerscope.") for module in modules))
                for index, (name, modules) in enumerate(LAYERS)]
    assert drawn == expected


def test_the_api_reference_covers_the_front_door() -> None:
    import layerscope

    overview = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    assert [name for name in layerscope.__all__ if name != "__version__" and f"`{name}`" not in overview] == []
    rendered = [line.split(":::", 1)[1].strip() for page in pages() if page.startswith("api/")
                for line in (DOCS / page).read_text(encoding="utf-8").splitlines() if line.startswith(":::")]
    source = ROOT / "src"
    missing = [name for name in rendered if not (source / (name.replace(".", "/") + ".py")).is_file()
               and not (source / name.replace(".", "/") / "__init__.py").is_file()]
    assert missing == [], "API pages render modules that are not in src/"


# -------------------------------------------------------------------------------- the checkers themselves


@pytest.mark.parametrize(("rest", "problem"), [
    ("select --model smollm2-135m --tasks bbc.csv --labels-per-class 8 --bootstrap 100", None),
    ("selct --model smollm2-135m", "no command 'selct'"),
    ("select --labels-per-klass 8", "'select' has no option --labels-per-klass"),
    ("export -m smollm2-135m -l -1 --out DIR", None),  # a negative value is not an option
    ("data fetch --all", None),
    ("data fecth", "no command 'data fecth'"),
    ("experiment train-tiny --set minutes=3", None),
    ("experiment train-tinny", "no experiment 'train-tinny'"),
    ("experiment NAME ...", None),
    ("analyze [--model] [--select-by] --out runs/x", None),
    ("analyze --select-by dime@50%-100%", None),
    ("sweep SWEEP.yaml [--backend local\\|ray]", None),
])
def test_the_command_checker(rest: str, problem: str | None) -> None:
    found = command_problem(rest)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem), found


def test_the_command_checker_parses_rules_and_conditions() -> None:
    assert command_problem("analyze --select-by dime --condition remove-top:1") is None
    assert command_problem("analyze --select-by dimee").startswith("--select-by dimee: ")
    assert command_problem("analyze --condition whitten").startswith("--condition whitten: ")


def test_the_link_checker(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n## The paper's own setting (hub and GPU)\n\n```\n# not a heading\n```\n",
                    encoding="utf-8")
    source = tmp_path / "source.md"
    source.write_text("# Source\n\nSee [the page](page.md).\n", encoding="utf-8")
    assert link_problem(source, "page.md") is None
    assert link_problem(source, "page.md#the-papers-own-setting-hub-and-gpu") is None
    assert link_problem(source, "page.md#not-a-heading") == "no heading #not-a-heading in page.md"
    assert link_problem(source, "#source") is None
    assert link_problem(source, "#a-page") == "no heading #a-page in source.md"
    assert link_problem(source, "missing.md") == "no file missing.md"
    assert link_problem(source, "https://example.org/x.md") is None


def test_slugify_matches_python_markdown() -> None:
    toc = pytest.importorskip("markdown.extensions.toc")  # installed with the docs extra (make setup)
    titles = [match["title"] for path in documents()
              for line in split_fences(path.read_text(encoding="utf-8"))[0] if (match := HEADING.match(line))]
    assert len(titles) > 50
    for title in titles:
        rendered = re.sub(r"[`*_]", "", title)
        assert slugify(title) == toc.slugify(rendered, "-"), title
