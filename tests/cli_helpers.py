"""Test helpers shared by the command-line tests (imported as ``from cli_helpers import ...``)."""

from __future__ import annotations

import subprocess
import sys

_MARKER = "=== next command ==="


def cli_runs(*commands: list[str], timeout: float = 600) -> list[tuple[int, list[str], str]]:
    """Several ``layerscope`` commands through the real ``main()`` in one fresh interpreter (one start-up).

    Returns, per command, its exit status, its non-empty stderr lines and its stdout.
    """
    script = ("import sys\nfrom layerscope.cli import main\n"
              f"for args in {[list(c) for c in commands]!r}:\n"
              "    sys.argv = ['layerscope', *args]\n"
              "    try:\n        main()\n    except SystemExit as exit:\n        code = exit.code\n"
              "    else:\n        code = 0\n"
              f"    print('status', code, flush=True)\n    print({_MARKER!r}, flush=True)\n"
              f"    print({_MARKER!r}, file=sys.stderr, flush=True)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    outs = result.stdout.split(_MARKER)[: len(commands)]
    assert len(outs) == len(commands) and all("status" in part for part in outs), result.stdout + result.stderr
    codes = [int(part.split("status")[-1].split()[0]) for part in outs]
    errors = [[line for line in part.strip().splitlines() if line.strip()] for part in result.stderr.split(_MARKER)]
    return list(zip(codes, errors[: len(commands)], outs, strict=True))


def cli_many(*commands: list[str]) -> list[tuple[int, list[str]]]:
    """:func:`cli_runs` without the stdout: each command's exit status and its stderr lines."""
    return [(code, errors) for code, errors, _ in cli_runs(*commands, timeout=300)]
