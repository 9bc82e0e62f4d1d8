"""Benchmark: label-free layer selection judged on models it was not chosen on (issue 13, point 1).

Runs the protocol of :mod:`layerscope.analysis.protocol` on the models of the authors' stored results
(``../shared/fixtures/authors_results``: those with a usable layer x task grid at revision ``main``)
plus the models of any layerscope run folders given as arguments (``results.duckdb``), and prints:

(a) the paper's Table 2 for pythia-410m from the fixture (min-DiME 48.50, best layer 17 51.9, last
    layer 46.8);
(b) issue 13's table: per rule family, the mean regret (oracle best single layer's average minus the
    rule's, x 100) over the models with its bootstrap interval over tasks, and the wins against the
    last layer; a fixed rule is scored as it is, a family is chosen leave-one-model-out (the rule
    with the best mean regret on the other models, scored on the held-out one);
(c) the protocol's selector, the default label-free rule of ``analyze``: among the rule families that
    give one layer for every task (the last layer included), the family is picked by an inner
    held-out loop on the training models, then that family's best rule; the outer loop scores the
    whole procedure on the held-out model (nested cross-validation), leave-one-model-out and
    leave-one-family-out; the rule it picks on all the models is what a new model gets;
(d) that rule on models the protocol never saw (``--unseen`` run folders: scored only, never chosen on),
    beside the last layer and the paper's min-DiME.

``--write-record FILE`` writes the rule and its record as JSON (``analyze`` quotes it:
``src/layerscope/analysis/label_free_record.json``). The last line is
``regret: <mean leave-one-model-out regret of the protocol's selector>``.

Run: ``.venv/bin/python benchmarks/bench_selection.py [RUN_FOLDER ...] [--unseen RUN_FOLDER ...]``
(``--help`` for options).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import pandas as pd

from layerscope.analysis import format_table, load_authors_results
from layerscope.analysis.choice import rule_spec
from layerscope.analysis.protocol import (
    ProtocolResult,
    default_candidates,
    evaluate_selector,
    guarded_chooser,
    nested_chooser,
    one_layer_families,
    rules_of_family,
    run_protocol,
)
from layerscope.analysis.rules import (
    LastLayer,
    MetricRule,
    ModelData,
    RankAggregateRule,
    authors_coverage,
    authors_models,
    run_models,
)

REPO = Path(__file__).resolve().parents[1]
TABLE2_MODEL = "pythia-410m"

#: Issue 13's table (7 models: the 6 fixture models plus a layerscope run of SmolLM2): mean regret, wins.
ISSUE_TABLE: dict[str, tuple[float, str]] = {
    "last layer": (5.60, "-"),
    "min dime per task (the paper's)": (7.16, "3 of 7"),
    "min infonce per task": (5.59, "4 of 7"),
    "best fixed depth, picked on the other models": (6.01, "4 of 7"),
    "rank-average in a late-depth window, picked on the other models": (2.98, "6 of 7"),
}


#: The protocol's selector: the nested choice, kept only where it held up against the last layer.
GUARDED = "the protocol, guarded: that rule only if, held out, it beat the last layer on more models than it lost"

#: Column heads of the per-model table, in the order of the table's rows.
SHORT_LABELS = ("last", "min dime/task", "min infonce/task", "depth LOMO", "rank-late LOMO", "any rule LOMO",
                "nested LOMO", "guarded LOMO")


def default_fixture() -> Path | None:
    for candidate in (os.environ.get("LAYERSCOPE_AUTHORS_RESULTS"), REPO.parent / "shared" / "fixtures" / "authors_results"):
        if candidate and (Path(candidate) / "authors_mteb_scores.csv").is_file():
            return Path(candidate)
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Judge label-free layer-selection rules leave-one-model-out and leave-one-family-out "
        "on the authors' stored results plus layerscope run folders.",
    )
    parser.add_argument("runs", nargs="*", type=Path, help="run folders (with results.duckdb) to add, e.g. runs/demo")
    parser.add_argument(
        "--authors", type=Path, default=None,
        help="folder of the authors' results (default: $LAYERSCOPE_AUTHORS_RESULTS or ../shared/fixtures/authors_results)",
    )  # fmt: skip
    parser.add_argument("--no-authors", action="store_true", help="use the run folders only")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of the tasks (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval coverage (default 0.95)")
    parser.add_argument("--verbose", action="store_true", help="log which models are used and why")
    parser.add_argument("--unseen", nargs="*", type=Path, default=[],
                        help="run folders scored with the protocol's rule only (never chosen on)")
    parser.add_argument("--write-record", type=Path, default=None, help="write the rule and its record as JSON")
    return parser.parse_args(argv)


def late_window(rule: object) -> bool:
    return isinstance(rule, RankAggregateRule) and rule.lo >= 0.5


def print_table2(authors_dir: Path) -> None:
    authors = load_authors_results(authors_dir)
    table = authors.selection_table(TABLE2_MODEL, "main").set_index("rule")
    rows = ["best layer (labels)", "last layer", "min dime", "min infonce", "min dataset_entropy"]
    shown = table.loc[rows, ["layer", "average", "gain_vs_last", "n_fallback"]].reset_index()
    print(f"(a) Table 2, {TABLE2_MODEL} (authors' results, average over {int(table['n_tasks'].iloc[0])} tasks x 100)")
    print(format_table(shown, decimals_by_column={"average": 2, "gain_vs_last": 2}))
    print(
        f"    min-DiME {table.loc['min dime', 'average']:.2f} (paper 48.5); best layer "
        f"{int(table.loc['best layer (labels)', 'layer'])} {table.loc['best layer (labels)', 'average']:.1f} "
        f"(paper 52.0); last layer {table.loc['last layer', 'average']:.1f} (paper 45.5)"
    )


def interval(row: pd.Series) -> str:
    return f"[{row['regret_low']:.2f}, {row['regret_high']:.2f}]"


def print_family_table(result: ProtocolResult, labels: dict[str, str], n_models: int) -> None:
    summary = result.summary
    rows = []
    for label, kind in labels.items():
        scheme = "fixed" if kind == "fixed" else "model"
        row = summary[(summary["selector"] == label) & (summary["scheme"] == scheme)].iloc[0]
        reference = ISSUE_TABLE.get(label)
        rows.append(
            {
                "rule": label,
                "held out": "-" if scheme == "fixed" else "LOMO",
                "mean regret": f"{row['mean_regret']:.2f}",
                "95% interval": interval(row),
                "wins vs last": "-" if label == "last layer" else f"{row['wins']} of {n_models}",
                "issue (7 models)": "-" if reference is None else f"{reference[0]:.2f} ({reference[1]})",
            }
        )
    print(format_table(pd.DataFrame(rows)))


def print_per_model(result: ProtocolResult, short: dict[str, str]) -> None:
    frame = result.per_model
    frame = frame[frame["selector"].isin(list(short)) & frame["scheme"].isin(["fixed", "model"])]
    wide = frame.pivot(index="model", columns="selector", values="regret")[list(short)]
    wide.columns = list(short.values())
    print(format_table(wide.reset_index(), decimals=2))


def print_protocol(result: ProtocolResult, rule: object, families: dict[str, tuple]) -> None:
    print(f"(c) the protocol's selector: a family picked by an inner held-out loop among "
          f"{', '.join(f'{name} ({len(rules)})' for name, rules in families.items())}, then its best rule; "
          "kept only if that procedure, run held out on the training models, beat the last layer on more of "
          "them than it lost to it and by a positive mean gain (else the last layer)")
    print(f"    on all {int(result.ranking['n_models'].iloc[0])} models it picks: {rule.name}  "
          f"(--select-by {rule_spec(rule)})")
    frame = result.per_model[result.per_model["selector"] == result.label]
    for scheme, title in (("model", "leave-one-model-out"), ("family", "leave-one-family-out")):
        part = frame[frame["scheme"] == scheme]
        if part.empty:
            print(f"    {title}: not run (a single family)")
            continue
        shown = part[["model", "family", "rule", "regret", "regret_low", "regret_high", "gain_vs_last", "win"]]
        print(f"    {title}: the procedure run on the training models, its rule scored on the held-out one")
        print(format_table(shown.reset_index(drop=True), decimals=2))
        row = result.summary[(result.summary["selector"] == result.label) & (result.summary["scheme"] == scheme)].iloc[0]
        print(
            f"    {title}: mean held-out regret {row['mean_regret']:.2f} {interval(row)}, "
            f"gain vs last {row['mean_gain_vs_last']:+.2f}, wins vs last {row['wins']} of {row['n_models']}"
        )


def score_unseen(rule: object, folders: list[Path], n_boot: int, seed: int, confidence: float) -> pd.DataFrame:
    """The protocol's rule, the last layer and the paper's min-DiME on models never used to choose."""
    models = [model for folder in folders for model in run_models(folder)]
    if not models:
        return pd.DataFrame()
    frames = []
    for label, selector in (("protocol's rule", rule), ("last layer", LastLayer()),
                            ("min dime per task", MetricRule("dime", "min", texts="task"))):
        per_model, _ = evaluate_selector(selector, models, label=label, n_boot=n_boot, seed=seed,
                                         confidence=confidence)
        frames.append(per_model)
    return pd.concat(frames, ignore_index=True)


def record(rule: object, result: ProtocolResult, unseen: pd.DataFrame, argv: list[str],
           models: list[ModelData], n_authors: int) -> dict:
    """What analyze quotes about its default rule: the rule, and how it did on models it was not chosen on."""
    import datetime

    def rows(frame: pd.DataFrame) -> list[dict]:
        columns = ["model", "family", "rule", "layer", "depth_pct", "average", "oracle", "last", "regret",
                   "gain_vs_last", "win"]
        return [{key: (None if pd.isna(value) else value.item() if hasattr(value, "item") else value)
                 for key, value in row.items()} for row in frame[columns].to_dict("records")]

    held = {}
    for scheme in ("model", "family"):
        row = result.summary[(result.summary["selector"] == result.label) & (result.summary["scheme"] == scheme)]
        if row.empty:
            continue
        part = result.per_model[(result.per_model["selector"] == result.label) & (result.per_model["scheme"] == scheme)]
        held[scheme] = {"mean_regret": round(float(row["mean_regret"].iloc[0]), 3), "wins": int(row["wins"].iloc[0]),
                        "n_models": int(row["n_models"].iloc[0]), "per_model": rows(part)}
    mine = unseen[unseen["selector"] == "protocol's rule"] if not unseen.empty else unseen
    last = result.summary[(result.summary["selector"] == "last layer") & (result.summary["scheme"] == "fixed")]
    return {
        "rule": rule_spec(rule), "name": rule.name, "held_out": held,
        "trained_on": {"n_models": len(models), "authors": n_authors, "runs": len(models) - n_authors,
                       "models": [model.name for model in models]},
        "last_layer_regret": round(float(last["mean_regret"].iloc[0]), 3) if not last.empty else None,
        "unseen": {"mean_regret": None if mine.empty else round(float(mine["regret"].mean()), 3),
                   "wins": None if mine.empty else int(mine["win"].sum()),
                   "n_models": len(mine), "per_model": [] if mine.empty else rows(mine)},
        "command": "python benchmarks/bench_selection.py " + " ".join(argv),
        "date": datetime.date.today().isoformat(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")
    started = time.perf_counter()
    models: list[ModelData] = []
    authors_dir = None if args.no_authors else (args.authors or default_fixture())
    if not args.no_authors:
        if authors_dir is None:
            print("the authors' results were not found: pass --authors or set LAYERSCOPE_AUTHORS_RESULTS", file=sys.stderr)
            return 2
        print_table2(authors_dir)
        print()
        coverage = authors_coverage(authors_dir)
        print("authors' models with a usable layer x task grid at revision main:")
        print(format_table(coverage[["model", "last_layer", "n_layers_complete", "fully_complete", "usable", "reason"]]))
        models += authors_models(authors_dir)
    n_authors = len(models)
    for folder in args.runs:
        found = run_models(folder)
        print(f"run folder {folder}: {', '.join(model.name for model in found) or 'no finished run with scores'}")
        models += found
    if len(models) < 2:
        print("the protocol needs at least 2 models", file=sys.stderr)
        return 2
    print()
    print("models:")
    print(format_table(pd.DataFrame([model.describe() for model in models]).drop(columns=["metrics", "source"])))

    candidates = default_candidates()
    families = one_layer_families(candidates)
    one_layer = tuple(rule for rules in families.values() for rule in rules)
    labels = {
        "last layer": "fixed",
        "min dime per task (the paper's)": "fixed",
        "min infonce per task": "fixed",
        "best fixed depth, picked on the other models": "family",
        "rank-average in a late-depth window, picked on the other models": "family",
        "any of the 325 candidate rules, picked on the other models": "family",
        "the protocol: a family by an inner held-out loop, then its best rule": "family",
        GUARDED: "family",
    }
    selectors = {
        "last layer": LastLayer(),
        "min dime per task (the paper's)": MetricRule("dime", "min", texts="task"),
        "min infonce per task": MetricRule("infonce", "min", texts="task"),
        "best fixed depth, picked on the other models": rules_of_family(candidates, "fixed_depth"),
        "rank-average in a late-depth window, picked on the other models": rules_of_family(
            candidates, "rank_aggregate", predicate=late_window
        ),
        "any of the 325 candidate rules, picked on the other models": candidates,
        "the protocol: a family by an inner held-out loop, then its best rule": one_layer,
    }
    nested = nested_chooser(families)
    guarded = guarded_chooser(nested)
    result = run_protocol(models, one_layer, selectors=selectors, chooser=nested, choosers={GUARDED: guarded},
                          n_boot=args.n_boot, seed=args.seed, confidence=args.confidence, label=GUARDED)  # fmt: skip
    rule = guarded(one_layer, models)

    print()
    print(f"(b) issue 13's table on {len(models)} models: regret = oracle best single layer - rule (x 100), "
          f"{args.confidence:.0%} bootstrap interval over tasks (seed {args.seed}, {args.n_boot} resamples)")
    print_family_table(result, labels, len(models))
    print()
    print("    per-model regret (held out: LOMO for the rows picked on the other models):")
    print_per_model(result, dict(zip(labels, SHORT_LABELS, strict=True)))
    chosen = result.per_model[result.per_model["scheme"] == "model"]
    for label in list(labels)[3:5]:
        picks = chosen.loc[chosen["selector"] == label, ["model", "rule"]]
        print(f"    {label}: " + "; ".join(f"{model} <- {rule}" for model, rule in picks.itertuples(index=False)))
    print()
    print_protocol(result, rule, families)
    unseen = score_unseen(rule, list(args.unseen), args.n_boot, args.seed, args.confidence)
    if not unseen.empty:
        print()
        print(f"(d) on models the protocol never saw ({', '.join(str(folder) for folder in args.unseen)}): regret and "
              "gain vs the last layer (x 100)")
        wide = unseen.pivot(index="model", columns="selector", values="regret")
        gain = unseen[unseen["selector"] == "protocol's rule"].set_index("model")[["layer", "gain_vs_last", "win"]]
        table = wide.join(gain).reset_index()
        print(format_table(table, decimals=2))
        mine = unseen[unseen["selector"] == "protocol's rule"]
        print(f"    protocol's rule: mean regret {mine['regret'].mean():.2f}, gain vs last "
              f"{mine['gain_vs_last'].mean():+.2f}, wins vs last {int(mine['win'].sum())} of {len(mine)}")
    if args.write_record is not None:
        import json

        written = record(rule, result, unseen, list(argv or sys.argv[1:]), models, n_authors)
        args.write_record.write_text(json.dumps(written, indent=1) + "\n")
        print(f"record -> {args.write_record}")
    print()
    print(f"{len(models)} models, {len(candidates)} candidate rules, {time.perf_counter() - started:.1f} s")
    print(f"regret: {result.held_out_regret('model'):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
