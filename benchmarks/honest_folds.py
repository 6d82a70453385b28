"""Issue 13: does CV predict the leaderboard? Folds grouped by duplicates vs by identity, and the
epoch picked on the scored rows vs the last epoch, on fkd-proxy, scored at the Kaggle simulator.

For each folds grouping it fetches the proxy into its own work folder, writes 5 folds (seed 0)
and trains each family with the same config and epochs:

- ``best``: the old default (the weights of the best validation epoch, no early stopping here,
  so every variant trains the same epochs; lenet at the seeds' constant learning rate);
- ``last``: the new default (the last epoch's weights, the same schedules);
- ``last-cosine``: lenet's last epoch under a cosine schedule (tried as the default, rejected).

Each run's submission is uploaded to ../shared/kaggle-sim (public half of the hidden answers).
From each run's per-epoch validation history it also reports the pooled fold RMSE at the best
epoch and at the last epoch of the same training: the optimism of picking the epoch on the rows
that are scored (exact for RMSE: a fold's MSE times its labelled coordinates, summed).

    python benchmarks/honest_folds.py --data ../shared/data --epochs lenet=20,resnet=8
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ (sim.py)

from sim import SIM, public_score, start_simulator

SLUG = "facial-keypoints-detection"
ROOT = Path(__file__).resolve().parents[1]
# What each variant changes from the family's defaults (patience 0 in both: same epochs).
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "best": {"lenet": {"keep": "best", "schedule": "none"}, "resnet": {"keep": "best"}},
    "last": {"lenet": {"keep": "last", "schedule": "none"}, "resnet": {"keep": "last"}},
    "last-cosine": {"lenet": {"keep": "last", "schedule": "cosine"}},
}


def epoch_optimism(run_path: Path) -> dict[str, float]:
    """Pooled validation RMSE (no TTA) at each fold's best epoch and at its last epoch."""
    sse_best = sse_last = count = 0.0
    for marker in sorted(run_path.glob("fold-*.done.json")):
        record = json.loads(marker.read_text())
        coords = record["scores"]["coordinates"]
        history = record["submodels"]["main"]["history"]
        scores = [h["val_score"] for h in history]
        sse_best += coords * min(scores) ** 2
        sse_last += coords * scores[-1] ** 2
        count += coords
    return {"best_epoch": math.sqrt(sse_best / count), "last_epoch": math.sqrt(sse_last / count)}


def single_model_publics(comp: Any, run_path: Path) -> list[float]:
    """Public score of each fold's model alone (its own test predictions, not the k-model mean
    that a run submits): the like-for-like partner of CV, which scores single models too."""
    import numpy as np

    from kit.data.arrays import KeypointData

    test = KeypointData.load(comp.workspace.test_npz)
    scores = []
    for fold_file in sorted(run_path.glob("fold-*.npz")):
        with np.load(fold_file) as z:
            predictions = z["test"].astype(np.float64)
        csv = run_path / f"single-{fold_file.stem}.csv"
        comp.plugin.write_submission(csv, comp, comp.workspace.raw, test, predictions, None)
        scores.append(public_score(SLUG, csv, f"{run_path.name} {fold_file.stem} alone"))
    return scores


def rescore_singles(work: Path) -> list[dict[str, Any]]:
    """Single-model public scores of every run under an earlier benchmark's work folder."""
    from kit.competition import load_competition
    from kit.store.manifests import RunManifest

    rows = []
    for work_dir in sorted(work.glob("work-*")):
        os.environ["KIT_WORK"] = str(work_dir)
        comp = load_competition("facial-keypoints")
        for manifest_path in sorted(comp.workspace.runs.glob("*/manifest.json")):
            run = RunManifest.load(manifest_path)
            singles = single_model_publics(comp, manifest_path.parent)
            row = {
                "folds": work_dir.name.removeprefix("work-"),
                "run": run.run_id,
                "keep": run.config["train"]["keep"],
                "cv": run.cv["overall"],
                "fold_scores": [s["overall"] for s in run.fold_scores.values()],
                "single_publics": singles,
                "single_public_mean": sum(singles) / len(singles),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def group_sizes(folds: Any) -> dict[str, Any]:
    sizes = folds["group"].value_counts()
    return {
        "groups": len(sizes),
        "singletons": int((sizes == 1).sum()),
        "largest": sizes.head(5).tolist(),
        "median": float(sizes.median()),
        "p90": float(sizes.quantile(0.9)),
    }


def run_grouping(
    group_by: str, proxy: Path, work: Path, families: dict[str, int], variants: list[str]
) -> list[dict[str, Any]]:
    from kit.competition import load_competition
    from kit.data.folds import write_folds
    from kit.fetch import fetch
    from kit.submit import make_submission
    from kit.training.runs import train_run

    os.environ["KIT_WORK"] = str(work / f"work-{group_by}")
    os.environ["KIT_SUBMISSIONS"] = str(work / f"subs-{group_by}")
    comp = load_competition("facial-keypoints")
    fetch(comp, proxy)
    started = time.perf_counter()
    made = write_folds(comp, k=5, seed=0, group_by=group_by, force=True)
    folds_seconds = time.perf_counter() - started
    print(f"{group_by}: {group_sizes(made.folds)} in {folds_seconds:.1f} s", flush=True)
    rows = []
    for variant in variants:
        if group_by == "duplicates" and variant == "last":
            continue  # the old folds are measured with the old default only
        for family, epochs in families.items():
            if family not in VARIANTS[variant]:
                continue
            overrides = {"patience": 0, **VARIANTS[variant][family]}
            t0 = time.perf_counter()
            run = train_run(comp, family, overrides, epochs=epochs, pictures=False)
            seconds = time.perf_counter() - t0
            sub = make_submission(comp, run.path, subset_source="none", dry_run=True)
            public = public_score(SLUG, sub.path, f"{family} {group_by} {variant}")
            row = {
                "folds": group_by,
                "family": family,
                "keep": variant,
                "epochs": epochs,
                "cv": run.cv_score,
                "public": public,
                "gap": public - run.cv_score,
                **epoch_optimism(run.path),
                "train_s": round(seconds),
                "run": run.run_id,
                "groups": group_sizes(made.folds),
                "folds_s": round(folds_seconds, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| folds | family | weights kept | epochs | CV RMSE | public | public - CV | "
    head += "val at best epoch | val at last epoch |\n|" + " --- |" * 3 + " ---: |" * 6
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['folds']} | {r['family']} | {r['keep']} epoch | {r['epochs']} | "
            f"{r['cv']:.4f} | {r['public']:.4f} | {r['gap']:+.4f} | "
            f"{r['best_epoch']:.4f} | {r['last_epoch']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--epochs", default="lenet=20,resnet=8", help="family=epochs,...")
    parser.add_argument("--groupings", default="duplicates,identity")
    parser.add_argument("--variants", default="best,last")
    parser.add_argument("--port", type=int, default=8781)
    parser.add_argument("--out", type=Path, default=Path("honest_folds.json"))
    parser.add_argument(
        "--singles-from", type=Path, help="an earlier run's work folder: score each fold's model"
    )
    args = parser.parse_args()
    proxy = args.data / "fkd-proxy"
    if not proxy.is_dir() or not SIM.is_file():
        print(f"skipped: {proxy} or {SIM} is missing")
        return
    families = {k: int(v) for k, v in (p.split("=") for p in args.epochs.split(","))}
    if args.singles_from:
        sim = start_simulator(args.port, args.singles_from / "sim-singles")
        try:
            args.out.write_text(json.dumps(rescore_singles(args.singles_from), indent=2))
        finally:
            sim.terminate()
        return
    work = Path(tempfile.mkdtemp(prefix="honest-folds-"))
    sim = start_simulator(args.port, work / "sim")
    rows: list[dict[str, Any]] = []
    try:
        for group_by in args.groupings.split(","):
            rows += run_grouping(group_by, proxy, work, families, args.variants.split(","))
            args.out.write_text(json.dumps(rows, indent=2))
    finally:
        sim.terminate()
    print(markdown(rows))
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; work {work}")


if __name__ == "__main__":
    main()
