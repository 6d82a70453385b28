"""5-fold CV accuracy of each model family on the fkd-proxy at a fixed wall-clock budget.

For every family (default hyperparameters, `kit train facial-keypoints FAMILY`):

1. calibrate: a few timed training steps and a timed prediction of 256 faces give seconds
   per epoch (training + validation) and the forward rate;
2. epochs = what fits in budget / 5 folds after the fold's fixed cost (validation each epoch,
   OOF and test predictions with flip TTA), at least 1, at most the family's default;
3. run `kit.training.runs.train_run` for all 5 folds and record the CV RMSE and the real time.

The data stages run through the library if the cache or folds are missing
(`kit fetch facial-keypoints --from ../shared/data/fkd-proxy`, `kit folds facial-keypoints --k 5
--seed 0`). Run from the repo root:

    python benchmarks/train_accuracy.py [--budget 360] [--families sp,lenet,...]
        [--target-sets masked] [--proxy ../shared/data/fkd-proxy]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without pip install

from budget import calibrate, plan_epochs  # benchmarks/ is on sys.path as the script folder

from kit.competition import load_competition
from kit.data.arrays import KeypointData
from kit.data.folds import load_folds, write_folds
from kit.fetch import fetch
from kit.metrics import rmse
from kit.models import list_models
from kit.training.config import parse_overrides
from kit.training.device import configure_cpu_threads
from kit.training.runs import train_run

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
FOLDS, FOLDS_SEED = 5, 0


def prepare(proxy: Path):
    comp = load_competition("facial-keypoints")
    result = fetch(comp, proxy)  # a no-op when the cache is up to date
    print(f"fetch: {result.status} ({result.train_rows} train rows, {result.test_rows} test)")
    folds = write_folds(comp, k=FOLDS, seed=FOLDS_SEED)  # also a no-op when up to date
    print(f"folds: {'written' if folds.written else 'up to date'} ({folds.path})")
    return comp


def mean_shape_rmse(data: KeypointData, folds: np.ndarray) -> float:
    """CV RMSE of predicting every face as its training folds' mean keypoints (the floor)."""
    oof = np.empty_like(data.keypoints)
    for fold in np.unique(folds):
        oof[folds == fold] = np.nanmean(data.keypoints[folds != fold], axis=0)
    return rmse(oof, data.keypoints)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=360.0, help="seconds per family run")
    parser.add_argument("--families", default=",".join(list_models()))
    parser.add_argument("--target-sets", default="masked")
    parser.add_argument("--proxy", type=Path, default=REPO.parent / "shared/data/fkd-proxy")
    parser.add_argument("--set", action="append", default=[], help="key=value for every family")
    parser.add_argument("--out", default="train_accuracy.json", help="file in benchmarks/out")
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    threads = configure_cpu_threads()
    comp = prepare(args.proxy)
    data = KeypointData.load(comp.workspace.train_npz)
    n_test = len(KeypointData.load(comp.workspace.test_npz))
    folds = load_folds(comp, data)
    n_val = int(np.bincount(folds).mean())
    OUT.mkdir(exist_ok=True)
    results = []
    header = "| family | target set | epochs | s/epoch | CV RMSE | folds RMSE | wall s | load |"
    print(header + "\n| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for target_set in args.target_sets.split(","):
        for family in args.families.split(","):
            epoch_s, rate = calibrate(comp, family, data, folds, overrides)
            epochs, fixed = plan_epochs(
                family, args.budget, epoch_s, rate, n_val + n_test, FOLDS, overrides
            )
            t0 = time.perf_counter()
            run = train_run(
                comp, family, overrides, epochs=epochs, target_set=target_set, device="cpu"
            )
            wall = time.perf_counter() - t0
            fold_scores = [s["overall"] for s in run.manifest.fold_scores.values()]
            row = {
                "family": family,
                "target_set": target_set,
                "epochs": epochs,
                "epoch_s": round(epoch_s, 1),
                "fold_fixed_s": round(fixed, 1),
                "cv_rmse": round(run.cv_score, 4),
                "fold_rmse": [round(s, 3) for s in fold_scores],
                "wall_s": round(wall, 1),
                "reused": run.reused,
                "run_id": run.run_id,
                "per_keypoint": run.manifest.cv["per_keypoint"],
                "load_average": os.getloadavg()[1],
            }
            results.append(row)
            folds_text = " ".join(f"{s:.2f}" for s in fold_scores)
            print(
                f"| {family} | {target_set} | {epochs} | {epoch_s:.1f} | {run.cv_score:.3f} | "
                f"{folds_text} | {wall:.0f}{' (reused)' if run.reused else ''} | "
                f"{row['load_average']:.1f} |",
                flush=True,
            )
            (OUT / args.out).write_text(
                json.dumps(
                    {"budget_s": args.budget, "threads": threads, "results": results}, indent=2
                )
            )
    floor = mean_shape_rmse(data, folds)
    print(f"reference: the training folds' mean shape scores CV RMSE {floor:.3f}")


if __name__ == "__main__":
    main()
