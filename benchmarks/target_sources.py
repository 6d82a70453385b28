"""Issue 14 (part 5): one head per label source (``--target-set sources``) against the masked
target set on fkd-proxy, with the same family, epochs and folds.

    python benchmarks/target_sources.py --family lenet --epochs 20 --folds 0,1,2 --workers 2

Each target set trains with `kit.training.runs.train_run` (as `kit train facial-keypoints
FAMILY --target-set SET --folds K --epochs E`) on the folds `kit folds` writes (5 folds grouped
by identity, seed 0), in a work folder of its own (``--work``), so no other work folder is
touched; runs are content-addressed, so a rerun reuses every finished run and fold. train_run
trains the first K folds, K = the largest fold asked + 1; the table scores the asked folds only.

Columns: the pooled CV RMSE over the asked folds' validation rows; the same on the rows of each
label source (a row's source: the smallest one in competition.toml's ``[sources]`` that covers
its labels, kit.training.sources); "lookup-weighted", the per-source mean squared errors
weighted by each source's share of the values IdLookupTable.csv asks of the test images (the
values Kaggle scores); each fold's RMSE; the training seconds recorded.

fkd-proxy's two sources share one annotation (iBUG 68 points), so there sources can at best
match masked; on Kaggle's data the sources disagree (tests/test_target_sources.py shows the
effect of a known disagreement). ``--max-rows N`` keeps the first N training rows (a smoke test,
in its own work subfolder).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without pip install

from recipe_ablation import fold_records, prepare  # benchmarks/ is the script folder

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.progress import Event
from kit.training.config import parse_overrides, resolve_config
from kit.training.runs import train_run
from kit.training.sources import Heads

REPO = Path(__file__).resolve().parents[1]
TARGET_SETS = ("masked", "sources")


@dataclass(frozen=True)
class Row:
    """One table row: a target set's trained folds, scored on the asked folds."""

    target_set: str
    epochs: int
    cv: float  # pooled RMSE over the asked folds' validation rows
    per_source: dict[str, float]  # the same on each label source's rows
    lookup_weighted: float  # per-source MSE weighted by the test lookup's values per source
    fold_scores: dict[str, float]
    train_seconds: float
    run_id: str
    reused: bool


def squared_errors(oof: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The squared errors of every labelled coordinate of `rows`."""
    diff = oof[rows] - truth[rows]
    return diff[np.isfinite(diff)] ** 2


def lookup_shares(comp: Competition, heads: Heads) -> dict[str, float]:
    """Each source's share of the values IdLookupTable.csv asks (its test images' keypoints)."""
    test = KeypointData.load(comp.workspace.test_npz)
    asked = comp.plugin.test_keypoints(comp.workspace.raw, comp, test)
    source = heads.assign(asked)
    values = np.array([asked[source == h].sum() for h in range(len(heads.names))], float)
    return dict(zip(heads.names, values / values.sum(), strict=True))


def score_run(
    run_oof: np.ndarray,
    data: KeypointData,
    folds: np.ndarray,
    asked: list[int],
    heads: Heads,
    shares: dict[str, float],
) -> tuple[float, dict[str, float], float, dict[str, float]]:
    """(CV, per-source CV, lookup-weighted CV, per-fold CV) over the asked folds' rows."""
    rows = np.flatnonzero(np.isin(folds, asked))
    source = heads.assign(np.isfinite(data.keypoints).all(axis=2))

    def rmse(these: np.ndarray) -> float:
        return float(np.sqrt(squared_errors(run_oof, data.keypoints, these).mean()))

    per_source = {name: rmse(rows[source[rows] == h]) for h, name in enumerate(heads.names)}
    weighted = float(np.sqrt(sum(shares[n] * per_source[n] ** 2 for n in heads.names)))
    per_fold = {str(k): rmse(np.flatnonzero(folds == k)) for k in asked}
    return rmse(rows), per_source, weighted, per_fold


def run_target_set(
    comp: Competition,
    target_set: str,
    args: argparse.Namespace,
    overrides: dict[str, Any],
    folds: list[int],
    heads: Heads,
    shares: dict[str, float],
) -> Row:
    def progress(event: Event) -> None:
        if event.what == "fold":
            print(f"  {target_set}: {event.text}", flush=True)

    run = train_run(
        comp,
        args.family,
        overrides,
        epochs=args.epochs,
        folds=max(folds) + 1,
        target_set=target_set,
        device=args.device,
        on_event=progress,
        pictures=False,
        workers=args.workers,
    )
    data = KeypointData.load(comp.workspace.train_npz)
    cv, per_source, weighted, per_fold = score_run(
        run.oof, data, run.oof_folds, folds, heads, shares
    )
    records = fold_records(run.path, folds)
    return Row(
        target_set=target_set,
        epochs=max(r["submodels"]["main"]["epochs_run"] for r in records),
        cv=cv,
        per_source=per_source,
        lookup_weighted=weighted,
        fold_scores=per_fold,
        train_seconds=round(sum(r["seconds"] for r in records), 1),
        run_id=run.run_id,
        reused=run.reused,
    )


def markdown(rows: list[Row], folds: list[int], heads: Heads, shares: dict[str, float]) -> str:
    source_head = " | ".join(f"{n} rows" for n in heads.names)
    fold_head = " | ".join(f"fold {k}" for k in folds)
    weights = ", ".join(f"{n} {shares[n]:.2f}" for n in heads.names)
    lines = [
        f"| target set | epochs | CV RMSE | {source_head} | lookup-weighted ({weights}) | "
        f"{fold_head} | train s |",
        "| --- | ---: | ---: |" + " ---: |" * (len(heads.names) + 1 + len(folds) + 1),
    ]
    for r in rows:
        sources = " | ".join(f"{r.per_source[n]:.4f}" for n in heads.names)
        fold_text = " | ".join(f"{r.fold_scores[str(k)]:.4f}" for k in folds)
        lines.append(
            f"| {r.target_set} | {r.epochs} | {r.cv:.4f} | {sources} | {r.lookup_weighted:.4f} | "
            f"{fold_text} | {r.train_seconds:.0f}{' (reused)' if r.reused else ''} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="lenet")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--folds", default="0,1,2", help="folds to score, e.g. 0,1,2")
    parser.add_argument("--target-sets", default=",".join(TARGET_SETS))
    parser.add_argument("--set", action="append", default=[], help="key=value for every run")
    parser.add_argument("--out", type=Path, default=Path("target_sources.json"))
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "target-sources")
    parser.add_argument("--proxy", type=Path, default=REPO.parent / "shared" / "data" / "fkd-proxy")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: kit's choice)")
    parser.add_argument("--max-rows", type=int, help="keep the first N training rows (smoke test)")
    parser.add_argument("--workers", type=int, default=1, help="folds at once (CPU)")
    args = parser.parse_args()
    folds = sorted({int(k) for k in args.folds.split(",")})
    target_sets = [t.strip() for t in args.target_sets.split(",") if t.strip()]
    overrides = parse_overrides(args.set)
    resolve_config(args.family, overrides, epochs=args.epochs)  # bad settings fail now
    if not args.proxy.is_dir():
        print(f"skipped: {args.proxy} is missing (see ../shared/data/fkd-proxy/README.md)")
        return
    work = args.work if args.max_rows is None else args.work / f"first-{args.max_rows}"
    comp = prepare(args.proxy, work.resolve(), args.max_rows)
    heads = Heads.of(comp)
    shares = lookup_shares(comp, heads)
    if folds != list(range(max(folds) + 1)):
        print(f"note: train_run trains folds 0..{max(folds)}; the table scores {folds} only")
    rows: list[Row] = []
    started = time.perf_counter()
    for target_set in target_sets:
        rows.append(run_target_set(comp, target_set, args, overrides, folds, heads, shares))
        report = {
            "family": args.family,
            "epochs": args.epochs,
            "folds": folds,
            "overrides": overrides,
            "work": str(work),
            "max_rows": args.max_rows,
            "lookup_shares": shares,
            "rows": [asdict(r) for r in rows],
        }
        args.out.write_text(json.dumps(report, indent=2))
    print(markdown(rows, folds, heads, shares))
    seconds, load = time.perf_counter() - started, os.getloadavg()[0]
    print(f"{seconds:.0f} s; {os.cpu_count()} CPUs, load {load:.2f}; work {work}")


if __name__ == "__main__":
    main()
