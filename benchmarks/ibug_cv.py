"""5-fold CV MAE and NME of every model family and of the stack on the ibug-68 proxy (or another
MAE competition: --competition imm-58), at a fixed time budget per family (on the CPU unless
--device says otherwise).

For every family (default hyperparameters, as `kit train ibug-68 FAMILY`):

1. calibrate: a few timed training steps and a timed prediction give seconds per epoch
   (training + validation) and the forward rate;
2. epochs = what fits in budget / 5 folds after the fold's fixed cost (OOF and test
   predictions with flip TTA), at least 1, at most the family's default;
3. `kit.training.runs.train_run` on all 5 folds (`--workers` folds at once, each on one
   thread: the budget is wall time, so a family gets `budget * workers` seconds of fold time):
   CV MAE (original pixels), NME (% of the outer-eye-corner distance), per landmark group (the
   competition's subsets of more than one keypoint).

Then `kit.stack.stack` over those runs (nested CV on the same folds), and, as a floor, the
training folds' mean shape. The data stages run through the library when the cache or the
folds are missing (`kit fetch ibug-68 --from ../shared/data/ibug-68-proxy`,
`kit folds ibug-68 --k 5 --seed 0`). Run from the repo root:

    python benchmarks/ibug_cv.py [--budget 180] [--families sp,lenet,...] [--input-size 128]
        [--device cpu|cuda] [--proxy ../shared/data/ibug-68-proxy] [--no-stack]
        [--competition ibug-68] [--workers 1] [--keypoints SUBSET]

`--keypoints SUBSET` trains every family on that subset alone (imm-58's part 1: nose_tip) and
reports each run's CV MAE over it; no stack then.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without pip install

from budget import calibrate, plan_epochs  # benchmarks/ is on sys.path as the script folder

from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData
from kit.data.folds import load_folds, write_folds
from kit.fetch import fetch
from kit.metrics import evaluate
from kit.models import list_models
from kit.stack import stack
from kit.store import RunResult
from kit.training.device import configure_cpu_threads, resolve_device
from kit.training.runs import train_run

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
FOLDS, FOLDS_SEED = 5, 0
GROUPS: tuple[str, ...] = ()  # set by main(): the competition's subsets of several keypoints


def prepare(name: str, proxy: Path, input_size: int | None) -> Competition:
    """The competition (at `input_size`, in its own work folder when that is not the default),
    fetched and folded; both stages are no-ops when up to date."""
    comp = load_competition(name)
    if input_size is not None and input_size != comp.input_size:
        name = f"{comp.name}-{input_size}px"
        comp = dataclasses.replace(comp, name=name, input_size=input_size)
    result = fetch(comp, proxy)
    print(f"fetch: {result.status} ({result.train_rows} train faces, {result.test_rows} test)")
    folds = write_folds(comp, k=FOLDS, seed=FOLDS_SEED)
    print(f"folds: {'written' if folds.written else 'up to date'} ({folds.path})")
    return comp


def scores(comp: Competition, pred: np.ndarray, data: KeypointData) -> dict[str, Any]:
    """MAE (original px) and NME (%) overall and per landmark group."""
    s = evaluate(comp, pred, data)
    return {
        "mae": s.overall,
        "nme": s.nme,
        "mae_groups": {g: s.per_group[g] for g in GROUPS},
        "nme_groups": {g: s.nme_per_group[g] for g in GROUPS},
    }


def mean_shape_floor(comp: Competition, data: KeypointData, folds: np.ndarray) -> dict:
    """Every face predicted as its training folds' mean shape (in crop pixels): the floor."""
    oof = np.empty_like(data.keypoints)
    for fold in np.unique(folds):
        oof[folds == fold] = data.keypoints[folds != fold].mean(axis=0)
    return scores(comp, oof, data)


def row(name: str, result: dict[str, Any]) -> str:
    groups = " | ".join(f"{result['nme_groups'][g]:.2f}" for g in GROUPS)
    return f"| {name} | {result['mae']:.2f} | {result['nme']:.2f} | {groups} |"


def train_family(
    comp: Competition,
    family: str,
    data: KeypointData,
    folds: np.ndarray,
    budget: float,
    n: int,
    device: torch.device,
    workers: int = 1,
    keypoints: str | None = None,
) -> tuple[RunResult, dict[str, Any]]:
    epoch_s, rate = calibrate(comp, family, data, folds, device=device)
    epochs, _ = plan_epochs(family, budget * workers, epoch_s, rate, n, FOLDS)
    started = time.perf_counter()
    run = train_run(
        comp, family, epochs=epochs, device=str(device), workers=workers, keypoints=keypoints
    )
    wall = time.perf_counter() - started
    timing = {
        "family": family,
        "run_id": run.run_id,
        "reused": run.reused,
        "epochs": epochs,
        "epoch_s": round(epoch_s, 1),
        "wall_s": round(wall, 1),
        "train_s": round(run.manifest.train_seconds, 1),
        "load_average": os.getloadavg()[0],
    }
    if keypoints is not None:
        return run, {**timing, "keypoints": keypoints, "mae": run.manifest.cv["overall"]}
    result = {
        **timing,
        **scores(comp, run.oof, data),
        "fold_mae": [s["overall"] for s in run.manifest.fold_scores.values()],
    }
    return run, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=180.0, help="seconds per family")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto, ...")
    parser.add_argument("--families", default=",".join(list_models()))
    parser.add_argument("--input-size", type=int, default=None, help="default: competition's")
    parser.add_argument("--competition", default="ibug-68")
    parser.add_argument("--proxy", type=Path, default=None, help="default: ../shared/data/")
    parser.add_argument("--workers", type=int, default=1, help="folds trained at once")
    parser.add_argument("--keypoints", default=None, help="a subset: train on it alone")
    parser.add_argument("--no-stack", action="store_true")
    parser.add_argument("--out", default="ibug_cv.json", help="file in benchmarks/out")
    args = parser.parse_args()
    started = time.perf_counter()
    device = resolve_device(args.device)
    threads = configure_cpu_threads()
    print(f"load average at start {os.getloadavg()[0]:.2f}; torch threads {threads}")
    global GROUPS
    proxy = args.proxy or REPO.parent / "shared/data" / f"{args.competition}-proxy"
    comp = prepare(args.competition, proxy, args.input_size)
    GROUPS = tuple(g for g, names in comp.subsets.items() if len(names) > 1)
    data = KeypointData.load(comp.workspace.train_npz)
    n_test = len(KeypointData.load(comp.workspace.test_npz))
    folds = load_folds(comp, data)
    n_predict = int(np.bincount(folds).mean()) + n_test
    report: dict[str, Any] = {
        "budget_s": args.budget,
        "competition": comp.name,
        "keypoints": args.keypoints,
        "workers": args.workers,
        "input_size": comp.input_size,
        "device": str(device),
        "threads": threads,
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg()[0],
        "families": [],
    }
    OUT.mkdir(exist_ok=True)
    header = "| model | CV MAE px | CV NME % | " + " | ".join(f"NME {g}" for g in GROUPS) + " |"
    print(header + "\n|" + " --- |" * 3 + " ---: |" * len(GROUPS))
    floor = mean_shape_floor(comp, data, folds)
    report["mean_shape"] = floor
    print(row("mean shape (floor)", floor), flush=True)
    if args.keypoints is not None:
        shape = np.stack([data.keypoints[folds != f].mean(axis=0) for f in folds])
        subset = evaluate(comp, shape, data).per_group[args.keypoints]
        report["mean_shape"]["subset_mae"] = subset
        print(f"| mean shape (floor) | {args.keypoints} CV MAE {subset:.2f} px |", flush=True)
    runs = []
    for family in args.families.split(","):
        run, result = train_family(
            comp, family, data, folds, args.budget, n_predict, device, args.workers, args.keypoints
        )
        runs.append(run)
        report["families"].append(result)
        name = f"{family} ({result['epochs']} ep, {result['wall_s']:.0f} s)"
        if args.keypoints is None:
            print(row(name, result))
        else:
            print(f"| {name} | {args.keypoints} CV MAE {result['mae']:.2f} px |")
        (OUT / args.out).write_text(json.dumps(report, indent=2))
    if not args.no_stack and args.keypoints is None and len(runs) > 1:
        t0 = time.perf_counter()
        stacked = stack(comp, runs)
        seconds = time.perf_counter() - t0
        methods = stacked.manifest.methods
        for method in ("mean blend", "ridge stack", "lightgbm stack"):
            m = methods[method]
            result = {"mae": m["overall"], "nme": m["nme"], "nme_groups": m["nme_per_group"]}
            print(row(method, result))
        report["stack"] = {
            "stack_id": stacked.stack_id,
            "seconds": round(seconds, 1),
            "mae": stacked.cv_score,
            "nme": stacked.manifest.cv["nme"],
            "mae_groups": stacked.manifest.cv["per_group"],
            "nme_groups": stacked.manifest.cv["nme_per_group"],
            "best_single": stacked.manifest.best_single,
            "methods": {k: {"mae": v["overall"], "nme": v["nme"]} for k, v in methods.items()},
            "picks": pd.Series(stacked.manifest.picks).value_counts().to_dict(),
        }
        print(row(f"stack (picked per keypoint, {seconds:.0f} s)", report["stack"]))
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["load_average_end"] = os.getloadavg()[0]
    (OUT / args.out).write_text(json.dumps(report, indent=2))
    print(f"total wall {report['wall_s']:.0f} s; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
