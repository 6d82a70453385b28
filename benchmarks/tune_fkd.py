"""How far `kit tune` moves each family on fkd-proxy: tuned best config vs the default config.

    python benchmarks/tune_fkd.py [--families lenet,sp] [--trials 4] [--epochs 3] [--folds 3]
                                  [--timeout 20m] [--work work/bench-tune] [--device cpu]
                                  [--source DIR]

For each family: one Optuna study (``kit.tuning.tune``) of --trials trials at a fixed --epochs,
each trial scored on fold 0 of the benchmark's folds file (trial 0 is the family's default
config; with --timeout a family's search also stops then, as `kit tune --timeout` does); then
the best trial AND the default config are trained on every fold, so both get a CV RMSE on the
same folds. Prints Markdown for docs/benchmarks.md: fold-0 and CV RMSE of both,
the change, the budget used (wall seconds of the search and of the all-fold training).

The work folder (default work/bench-tune, git-ignored) keeps the cache, the folds file, the
study and the runs: a rerun reuses them (delete the folder to measure again). The data is
fetched from --source (default ../shared/data/fkd-proxy) and folds are written through the
library when missing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout without `pip install -e .`

import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from kit.competition import load_competition  # noqa: E402
from kit.data.folds import write_folds  # noqa: E402
from kit.durations import parse_duration  # noqa: E402
from kit.fetch import fetch  # noqa: E402
from kit.store import RunResult  # noqa: E402
from kit.training.runs import train_run  # noqa: E402
from kit.tuning import key_params, tune  # noqa: E402

DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "fkd-proxy"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="lenet,sp")
    parser.add_argument("--trials", type=int, default=4, help="trials per family (default incl.)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every trial and run")
    parser.add_argument("--folds", type=int, default=3, help="k of the benchmark's folds file")
    parser.add_argument("--timeout", help="search time per family, e.g. 20m (default: none)")
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench-tune")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    return parser.parse_args()


def row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def main() -> None:
    args = parse_args()
    os.environ["KIT_WORK"] = str(args.work)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    comp = load_competition("facial-keypoints")
    fetched = fetch(comp, args.source)
    folds = write_folds(comp, k=args.folds, seed=0)
    print(
        f"fkd-proxy: {fetched.train_rows} train rows ({fetched.complete_rows} complete), "
        f"{folds.k} folds; {args.trials} trials x {args.epochs} epochs on fold 0 per family; "
        f"device {args.device}; torch {torch.__version__}, optuna {optuna.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n",
        flush=True,
    )
    lines = []
    for family in args.families.split(","):
        result = tune(
            comp,
            [family],
            trials=args.trials,
            timeout=None if args.timeout is None else parse_duration(args.timeout),
            best_n=1,
            epochs=args.epochs,
            device=args.device,
            pictures=False,
        )
        table = result.table
        default_trial = table[table["default"]].iloc[0]
        default = train_run(
            comp, family, default_trial["params"], device=args.device, pictures=False
        )
        (best,) = result.best_runs[family]
        best_trial = table[table["run_id"] == best.run_id].iloc[0]
        lines.append(summary(family, table, default_trial, best_trial, default, best))
        print(f"{family}: done", flush=True)
    print()
    row("family", "trials (complete/pruned)", "search s", "all-fold s", "default fold-0",
        "best fold-0", "default CV", "tuned CV", "change", "best config")  # fmt: skip
    row(*["---"] * 2, *["---:"] * 7, "---")
    for cells in lines:
        row(*cells)


def summary(
    family: str,
    table: pd.DataFrame,
    default_trial: pd.Series,
    best_trial: pd.Series,
    default: RunResult,
    best: RunResult,
) -> list[str]:
    """One Markdown row: trials, budget used, fold-0 and CV RMSE of default and tuned.

    Costs come from the stored artifacts, so a rerun that reuses them reports the same: the
    search is the sum of the trials' durations, the all-fold training the folds other than
    fold 0 (which the trials trained) of the tuned and the default run.
    """
    states = table["state"].value_counts()
    search = table["seconds"].sum()
    finals = {run.run_id: run for run in (best, default)}.values()
    all_folds = sum(
        seconds
        for run in finals
        for fold, seconds in run.manifest.fold_seconds.items()
        if fold != "0"
    )
    change = 100 * (best.cv_score - default.cv_score) / default.cv_score
    return [
        family,
        f"{len(table)} ({states.get('COMPLETE', 0)}/{states.get('PRUNED', 0)})",
        f"{search:.0f}",
        f"{all_folds:.0f}",
        f"{default_trial['score']:.3f}",
        f"{best_trial['score']:.3f}",
        f"{default.cv_score:.3f}",
        f"{best.cv_score:.3f}",
        f"{change:+.1f} %",
        "default" if best.run_id == default.run_id else key_params(best_trial["params"]),
    ]


if __name__ == "__main__":
    main()
