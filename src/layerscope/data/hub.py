"""Texts from Hugging Face hub datasets (only where the hub is reachable).

Offline, or when the hub cannot be reached within a few seconds (:mod:`layerscope.hub`), callers
get a one-line :class:`~layerscope.errors.LayerscopeError` instead of a hang or a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerscope.errors import LayerscopeError
from layerscope.hub import offline_reason, require_hub

__all__ = ["ALIASES", "HubDataset", "load_hub_texts", "offline_reason", "parse_name", "require_hub"]


@dataclass(frozen=True)
class HubDataset:
    """How a short dataset name maps onto ``datasets.load_dataset`` arguments."""

    path: str
    config: str | None
    split: str
    column: str


#: Short names for common text sources (``load_texts("wikitext")``).
ALIASES: dict[str, HubDataset] = {
    "wikitext": HubDataset("Salesforce/wikitext", "wikitext-103-raw-v1", "test", "text"),
    "wikitext-2": HubDataset("Salesforce/wikitext", "wikitext-2-raw-v1", "test", "text"),
    "imdb": HubDataset("stanfordnlp/imdb", None, "test", "text"),
    "ag-news": HubDataset("fancyzhx/ag_news", None, "test", "text"),
}


def parse_name(source: str) -> HubDataset:
    """Turn ``name``, ``owner/name``, ``owner/name:config`` or ``owner/name:config@split`` into arguments.

    The column defaults to ``text``; aliases in :data:`ALIASES` fill in everything.
    """
    if source in ALIASES:
        return ALIASES[source]
    body, _, split = source.partition("@")
    path, _, config = body.partition(":")
    return HubDataset(path=path, config=config or None, split=split or "test", column="text")


def load_hub_texts(source: str, column: str | None = None) -> list[str]:
    """Load the non-empty texts of a hub dataset split.

    Parameters
    ----------
    source : str
        An alias (``wikitext`` = wikitext-103-raw-v1, test split) or ``owner/name[:config][@split]``
        (split defaults to ``test``).
    column : str, optional
        Column with the texts (default: the alias's, else ``text``).

    Returns
    -------
    list of str
        Stripped, non-empty texts in dataset order.
    """
    spec = parse_name(source)
    require_hub(f"dataset '{source}'")
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets comes with the mteb extra
        raise LayerscopeError("loading hub datasets needs the 'datasets' package: pip install 'layerscope[mteb]'") from None
    column = column or spec.column
    try:
        dataset = datasets.load_dataset(spec.path, spec.config, split=spec.split)
    except Exception as error:  # noqa: BLE001 - datasets raises many types; report one line
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise LayerscopeError(f"cannot load hub dataset '{source}': {first_line}") from None
    if column not in dataset.column_names:
        raise LayerscopeError(f"hub dataset '{source}' has no column '{column}' (columns: {', '.join(dataset.column_names)})")
    return [text.strip() for text in dataset[column] if isinstance(text, str) and text.strip()]
