"""Stacking on the fkd-proxy: nested-CV RMSE of kit's stacks against the best single model and
the mean blend, and the wall time of a whole `kit run facial-keypoints` at a stated budget.

1. data: `kit fetch facial-keypoints --from ../shared/data/fkd-proxy`, `kit folds --k 5 --seed 0`
   (no-ops when up to date; the same work folder as benchmarks/train_accuracy.py);
2. base models: BASES below, trained on all 5 folds with `train_run` (content-addressed: runs
   that exist are reused, so a rerun only stacks);
3. stacks of those runs with each feature set (`kit stack --features ...`): every method's
   nested-CV RMSE, the ratio to the best single model (target: LightGBM stack <= 0.95 x);
4. `python -m kit run facial-keypoints --from PROXY --budget B` in a fresh work folder, timed.

Run from the repo root (results: benchmarks/out/stack_fkd.json):

    python benchmarks/stack_fkd.py [--epochs 6] [--run-budget 8m] [--skip-run]

OMP_WAIT_POLICY=PASSIVE is set (unless set already) before torch loads: on this shared 2-core
VM, OpenMP's default spin-waiting made 2-thread training 3-4x SLOWER than 1 thread whenever
other processes used the cores (docs/benchmarks.md, "Stacking").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (see above)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without pip install

from kit.competition import load_competition
from kit.data.folds import write_folds
from kit.fetch import fetch
from kit.stack import BLEND, LIGHTGBM, PICKED, RIDGE, stack
from kit.training.runs import train_run

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
FOLDS, FOLDS_SEED = 5, 0
# (label, family, overrides, keypoints): cheap on a CPU, and different in what they learn.
BASES = (
    ("lenet", "lenet", {}, None),
    ("lenet-aug", "lenet", {"lr": 2e-3, "rotate_deg": 10.0, "brightness": 0.3, "seed": 1}, None),
    ("lenet-eight", "lenet", {"seed": 2}, "eight"),
)
FEATURE_SETS = ((), ("diffs",), ("coords", "diffs"), ("coords", "diffs", "image"))


def load_average() -> float:
    return os.getloadavg()[0]


def prepare(proxy: Path):
    comp = load_competition("facial-keypoints")
    result = fetch(comp, proxy)
    folds = write_folds(comp, k=FOLDS, seed=FOLDS_SEED)
    print(f"data: {result.status}, {result.train_rows} train rows; folds written={folds.written}")
    return comp


def train_bases(comp, epochs: int) -> tuple[list, list[dict]]:
    runs, rows = [], []
    for label, family, overrides, keypoints in BASES:
        started = time.perf_counter()
        run = train_run(comp, family, overrides, epochs=epochs, keypoints=keypoints, pictures=False)
        seconds = time.perf_counter() - started
        runs.append(run)
        rows.append(
            {
                "label": label,
                "run_id": run.run_id,
                "family": family,
                "overrides": overrides,
                "keypoints": keypoints or "all",
                "epochs": epochs,
                "cv_rmse": run.cv_score,
                "train_seconds": run.manifest.train_seconds,
                "wall_s": seconds,
                "reused": run.reused,
            }
        )
        print(f"base {label}: CV {run.cv_score:.4f} ({run.run_id}, {seconds:.0f} s)", flush=True)
    return runs, rows


def stack_rows(comp, runs) -> list[dict]:
    rows = []
    for features in FEATURE_SETS:
        started = time.perf_counter()
        result = stack(comp, runs, features=features)
        seconds = time.perf_counter() - started
        methods = result.manifest.methods
        best = result.manifest.best_single
        single = methods[best]["overall"]
        fits = [r for axes in result.manifest.lightgbm_rounds.values() for f in axes for r in f]
        row = {
            "features": list(features),
            "stack_id": result.stack_id,
            "best_single": best,
            "best_single_rmse": single,
            "mean_blend_rmse": methods[BLEND]["overall"],
            "ridge_rmse": methods[RIDGE]["overall"],
            "lightgbm_rmse": methods[LIGHTGBM]["overall"],
            "picked_rmse": methods[PICKED]["overall"],
            "lightgbm_ratio": methods[LIGHTGBM]["overall"] / single,
            "picked_ratio": methods[PICKED]["overall"] / single,
            "lightgbm_fits_with_trees": f"{sum(r > 0 for r in fits)}/{len(fits)}",
            "picks": sorted(set(result.manifest.picks.values())),
            "seconds": seconds if not result.reused else result.manifest.seconds,
            "load_average": load_average(),
        }
        rows.append(row)
        print(
            f"stack {'+'.join(features) or 'base'}: blend {row['mean_blend_rmse']:.4f}, "
            f"best single {single:.4f}, ridge {row['ridge_rmse']:.4f}, "
            f"LightGBM {row['lightgbm_rmse']:.4f} ({row['lightgbm_ratio']:.3f}x), "
            f"picked {row['picked_rmse']:.4f} ({row['picked_ratio']:.3f}x), {row['seconds']:.0f} s",
            flush=True,
        )
    return rows


def time_kit_run(proxy: Path, budget: str) -> dict:
    """`kit run facial-keypoints` from scratch (fresh work folder), as a user would run it."""
    with tempfile.TemporaryDirectory(prefix="kit-run-bench-") as tmp:
        env = {
            **os.environ,
            "KIT_WORK": str(Path(tmp) / "work"),
            "KIT_SUBMISSIONS": str(Path(tmp) / "submissions"),
            "PYTHONPATH": str(REPO),
            "COLUMNS": "160",
        }
        command = [sys.executable, "-m", "kit", "run", "facial-keypoints"]
        command += ["--from", str(proxy), "--budget", budget]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp)
        wall = time.perf_counter() - started
        manifests = sorted((Path(tmp) / "submissions" / "facial-keypoints").glob("*.json"))
        manifest = json.loads(manifests[-1].read_text()) if manifests else {}
    lines = done.stdout.strip().splitlines()
    summary = next((line for line in lines if line.startswith("pipeline:")), "")
    print(f"kit run --budget {budget}: exit {done.returncode}, {wall:.0f} s wall; {summary}")
    if done.returncode != 0:
        print(done.stderr[-2000:])
    return {
        "command": " ".join(command[1:]),
        "budget": budget,
        "exit_code": done.returncode,
        "wall_s": wall,
        "pipeline_line": summary,
        "submitted": manifest.get("source", {}).get("id"),
        "cv_rmse": manifest.get("cv_score"),
        "runs": manifest.get("runs"),
        "load_average": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", type=Path, default=REPO.parent / "shared/data/fkd-proxy")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each base model")
    parser.add_argument("--run-budget", default="8m", help="--budget of the timed kit run")
    parser.add_argument("--skip-run", action="store_true", help="do not time kit run")
    args = parser.parse_args()
    comp = prepare(args.proxy)
    runs, bases = train_bases(comp, args.epochs)
    report = {
        "machine": f"{os.cpu_count()} CPUs, load average at start {load_average():.1f}",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "bases": bases,
        "stacks": stack_rows(comp, runs),
    }
    if not args.skip_run:
        report["kit_run"] = time_kit_run(args.proxy, args.run_budget)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "stack_fkd.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUT / 'stack_fkd.json'}")


if __name__ == "__main__":
    main()
