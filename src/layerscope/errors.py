"""User-facing errors: one clear line, never a traceback (SPEC section 9)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LayerscopeError(Exception):
    """An error caused by user input or the environment; the CLI prints its message as one line."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the nearest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> LayerscopeError:
    """Build the error for an unknown name, suggesting the nearest and listing what exists."""
    choices = sorted(choices)
    return LayerscopeError(f"unknown {kind} '{name}'{suggest(name, choices)}; available: {', '.join(choices)}")
