"""Issue 14 (part 3): a training-recipe ablation on fkd-proxy: variants of one family (EMA of the
weights, regression losses, ...) trained by kit's normal path on the identity folds, and heatmap
models decoded both by soft-argmax and by DARK.

    python benchmarks/recipe_ablation.py --family heatmap --epochs 11 --folds 0,1,2 \\
        --variant base: --variant ema:ema=0.999 --out heatmap_ablation.json

Each ``--variant NAME:KEY=VALUE,KEY=VALUE`` is a name and ``--set``-style overrides of the
family's defaults (nothing after the colon: the defaults). Every variant trains with
`kit.training.runs.train_run` (as `kit train facial-keypoints FAMILY --folds K --epochs E`) on the
folds `kit folds` writes (5 folds grouped by identity, seed 0), in a work folder of its own
(``--work``), so no other work folder is touched; runs are content-addressed, so a rerun reuses
every finished run and fold. train_run trains the first K folds, K = the largest fold asked + 1;
the table scores the asked folds only: their pooled RMSE (the CV) and each fold's.

For a heatmap variant the saved fold models are also rebuilt with the other decode and predict
their validation rows again (no retraining: decoding holds no weights); the run's own decode,
re-predicted the same way, must reproduce the run's stored OOF (checked and reported).
``--max-rows N`` keeps the first N training rows (a smoke test, in its own work subfolder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without pip install

import train_accuracy  # benchmarks/ is on sys.path as the script folder

from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData
from kit.data.folds import write_folds
from kit.fetch import fetch
from kit.metrics import primary
from kit.models.codec import HEATMAP_DECODES
from kit.progress import Event
from kit.store import RunResult
from kit.training.checkpoint import load_fold_model
from kit.training.config import RunConfig, parse_overrides, resolve_config, run_speed
from kit.training.device import device_images, resolve_device
from kit.training.flip import flip_permutation
from kit.training.predict import predict_rows
from kit.training.runs import train_run

REPO = Path(__file__).resolve().parents[1]
COMPETITION = "facial-keypoints"
# A new key=value starts at a comma followed by `name=` (a value may hold commas: "0.3,1.4").
ITEM_SPLIT = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*=)")


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Row:
    """One table row: a variant's trained folds, decoded one way."""

    variant: str
    overrides: dict[str, Any]
    decode: str  # "-" for regression families
    epochs: int
    cv: float  # pooled RMSE over the asked folds' validation rows
    fold_scores: dict[str, float]
    train_seconds: float  # the asked folds' training + prediction time, as recorded
    run_id: str
    reused: bool
    redecoded: bool  # predicted again from the saved models (not the run's stored OOF)
    stored_oof_max_diff: float | None = None  # own decode re-predicted vs the stored OOF, px


def parse_variant(text: str) -> Variant:
    """ "ema:ema=0.999,lr=0.002" -> Variant("ema", {"ema": 0.999, "lr": 0.002})."""
    name, sep, items = text.partition(":")
    if not sep or not name.strip():
        raise SystemExit(
            f"--variant {text!r}: use NAME:KEY=VALUE,... (e.g. base: or ema:ema=0.999)"
        )
    parts = [p.strip() for p in ITEM_SPLIT.split(items) if p.strip()]
    return Variant(name.strip(), parse_overrides(parts))


def prepare(proxy: Path, work: Path, max_rows: int | None) -> Competition:
    """fkd-proxy fetched into `work` (its own KIT_WORK) with the identity folds of `kit folds`."""
    os.environ["KIT_WORK"] = str(work)
    if max_rows is None:
        return train_accuracy.prepare(proxy)  # fetch + folds: 5, seed 0, grouped by identity
    comp = load_competition(COMPETITION)
    fetch(comp, proxy)  # refetches each time: the cache below is cut to max_rows
    data = KeypointData.load(comp.workspace.train_npz)
    if len(data) > max_rows:
        data.subset(np.arange(max_rows)).save(comp.workspace.train_npz)
    write_folds(comp, k=train_accuracy.FOLDS, seed=train_accuracy.FOLDS_SEED)
    return comp


def fold_records(run_path: Path, folds: list[int]) -> list[dict[str, Any]]:
    return [json.loads((run_path / f"fold-{k}.done.json").read_text()) for k in folds]


def stored_oof(run_path: Path, fold: int) -> tuple[np.ndarray, np.ndarray]:
    with np.load(run_path / f"fold-{fold}.npz") as z:
        return z["rows"], z["oof"]


def redecode(
    comp: Competition,
    run: RunResult,
    fold: int,
    decode: str,
    images: torch.Tensor,
    device: torch.device,
) -> np.ndarray:
    """The fold's saved model, rebuilt with `decode`, predicting its validation rows as the run
    did (flip TTA when the run used it, its batch and speed settings)."""
    config = RunConfig(**run.manifest.config)
    rows, _ = stored_oof(run.path, fold)
    model = load_fold_model(run.path, fold, device=str(device), hparams={"decode": decode})
    keypoints = tuple(run.manifest.keypoint_indices)
    perm = flip_permutation(comp, keypoints) if config.train["tta"] else None
    return predict_rows(
        model,
        images,
        rows,
        device,
        batch_size=int(config.train["eval_batch_size"]),
        flip_perm=perm,
        speed=run_speed(config, device),
    )


def score(
    comp: Competition, data: KeypointData, predictions: dict[int, tuple[np.ndarray, np.ndarray]]
) -> tuple[float, dict[str, float]]:
    """(pooled RMSE, per-fold RMSE) of {fold: (rows, predictions)}."""
    per_fold = {
        str(k): primary(comp, pred, data.subset(rows)) for k, (rows, pred) in predictions.items()
    }
    rows = np.concatenate([r for r, _ in predictions.values()])
    pred = np.concatenate([p for _, p in predictions.values()])
    return primary(comp, pred, data.subset(rows)), per_fold


def run_variant(
    comp: Competition,
    family: str,
    variant: Variant,
    epochs: int,
    folds: list[int],
    device: str | None,
) -> list[Row]:
    def progress(event: Event) -> None:
        if event.what == "fold":
            print(f"  {variant.name}: {event.text}", flush=True)

    run = train_run(
        comp,
        family,
        variant.overrides,
        epochs=epochs,
        folds=max(folds) + 1,
        device=device,
        on_event=progress,
        pictures=False,
        workers=WORKERS[0],
    )
    data = KeypointData.load(comp.workspace.train_npz)
    records = fold_records(run.path, folds)
    common = {
        "variant": variant.name,
        "overrides": variant.overrides,
        "epochs": max(r["submodels"]["main"]["epochs_run"] for r in records),
        "train_seconds": round(sum(r["seconds"] for r in records), 1),
        "run_id": run.run_id,
        "reused": run.reused,
    }
    stored = {k: stored_oof(run.path, k) for k in folds}
    cv, per_fold = score(comp, data, stored)
    model = run.manifest.config["model"]
    own = model.get("decode", "-")
    rows = [Row(decode=own, cv=cv, fold_scores=per_fold, redecoded=False, **common)]
    if family != "heatmap":
        return rows
    torch_device = resolve_device(device)
    images = device_images(data.images, torch_device)
    for decode in (own, *(d for d in HEATMAP_DECODES if d != own)):
        predicted = {
            k: (stored[k][0], redecode(comp, run, k, decode, images, torch_device)) for k in folds
        }
        if decode == own:  # the same decode again: it must reproduce the stored OOF
            diff = max(float(np.abs(predicted[k][1] - stored[k][1]).max()) for k in folds)
            rows[0] = dataclasses.replace(rows[0], stored_oof_max_diff=diff)
            continue
        cv, per_fold = score(comp, data, predicted)
        name = f"{variant.name}+{decode}"
        rows.append(
            Row(
                decode=decode,
                cv=cv,
                fold_scores=per_fold,
                redecoded=True,
                **{**common, "variant": name},
            )
        )
    return rows


def markdown(rows: list[Row], folds: list[int]) -> str:
    fold_head = " | ".join(f"fold {k}" for k in folds)
    lines = [
        f"| variant | overrides | decode | epochs | CV RMSE | {fold_head} | train s |",
        "| --- | --- | --- | ---: | ---: |" + " ---: |" * len(folds) + " ---: |",
    ]
    for r in rows:
        overrides = ", ".join(f"{k}={v}" for k, v in r.overrides.items()) or "defaults"
        fold_text = " | ".join(f"{r.fold_scores[str(k)]:.4f}" for k in folds)
        lines.append(
            f"| {r.variant} | {overrides} | {r.decode} | {r.epochs} | {r.cv:.4f} | {fold_text} | "
            f"{r.train_seconds:.0f}{' (reused)' if r.reused else ''} |"
        )
    return "\n".join(lines)


WORKERS = [1]  # folds trained at once (--workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--folds", default="0,1,2", help="folds to score, e.g. 0,1,2")
    parser.add_argument(
        "--variant", action="append", required=True, type=parse_variant,
        help="NAME:KEY=VALUE,... (repeat; e.g. base: or ema:ema=0.999)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("recipe_ablation.json"))
    parser.add_argument(
        "--work", type=Path, default=REPO / "benchmarks" / "out" / "recipe-ablation"
    )
    parser.add_argument("--proxy", type=Path, default=REPO.parent / "shared" / "data" / "fkd-proxy")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: kit's choice)")
    parser.add_argument("--max-rows", type=int, help="keep the first N training rows (smoke test)")
    parser.add_argument("--workers", type=int, default=1, help="folds at once")
    args = parser.parse_args()
    WORKERS[0] = args.workers
    folds = sorted({int(k) for k in args.folds.split(",")})
    names = [v.name for v in args.variant]
    if len(set(names)) != len(names):
        raise SystemExit(f"--variant names must differ, got {names}")
    for variant in args.variant:  # every override checked before the first minute of training
        resolve_config(args.family, variant.overrides, epochs=args.epochs)
    if not args.proxy.is_dir():
        print(f"skipped: {args.proxy} is missing")
        return
    work = args.work if args.max_rows is None else args.work / f"first-{args.max_rows}"
    comp = prepare(args.proxy, work.resolve(), args.max_rows)
    if folds != list(range(max(folds) + 1)):
        print(f"note: train_run trains folds 0..{max(folds)}; the table scores {folds} only")
    rows: list[Row] = []
    started = time.perf_counter()
    for variant in args.variant:
        rows += run_variant(comp, args.family, variant, args.epochs, folds, args.device)
        report = {
            "family": args.family,
            "epochs": args.epochs,
            "folds": folds,
            "work": str(work),
            "max_rows": args.max_rows,
            "rows": [asdict(r) for r in rows],
        }
        args.out.write_text(json.dumps(report, indent=2))
    print(markdown(rows, folds))
    seconds, load = time.perf_counter() - started, os.getloadavg()[0]
    print(f"{seconds:.0f} s; {os.cpu_count()} CPUs, load {load:.2f}; work {work}")


if __name__ == "__main__":
    main()
