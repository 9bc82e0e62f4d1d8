"""Whether transformers draws its per-load "Loading weights" bars: a switch the CLI sets at start-up.

A module of its own, free of torch and transformers, so that setting the switch costs no import: it
is read by :func:`~layerscope.models.loading.load_model` at the next load.
"""

from __future__ import annotations

_LOAD_BARS = {"show": True}


def show_load_bars(show: bool) -> None:
    """Let transformers draw (or not) its per-load "Loading weights" bars in :func:`~layerscope.models.load_model`.

    The CLI turns them off so they do not break into its own progress display; hub download bars
    belong to huggingface_hub and stay. Applied at the next load, so that merely deciding it costs
    no transformers import.
    """
    _LOAD_BARS["show"] = bool(show)


def load_bars_shown() -> bool:
    """What :func:`show_load_bars` last set (True unless it was called)."""
    return _LOAD_BARS["show"]
