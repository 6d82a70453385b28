"""Issue 14 (part 4): do pseudo labels help a student, and how much does the normal set's leak
flatter its CV? On fkd-proxy, optionally scored at the Kaggle simulator.

A teacher fills the keypoints the training rows lack and labels the test rows (`kit pseudo`):
a finished run or stack of an existing work folder (``--work DIR --teacher ID``; no --teacher:
kit's default, the best stack, else the best run), or a run this script trains on a fresh
fetch of the proxy (``--teacher-family resnet --teacher-epochs 8``). It builds the normal set
and the strict one (per fold, from the teacher's fold-k models), then trains one student
family at fixed epochs on the first ``--folds`` folds: once without pseudo labels, and with
each set at each ``--weights`` value (weight 0 trains exactly as without pseudo labels, which
tests/test_pseudo.py proves, so it is that row). The table: CV on the true labels of the
trained folds, the leak (normal minus strict CV at the same weight: below 0, the normal set
flatters), seconds of training; with ``--sim``, each submission's public score (the teacher's
too) at ../shared/kaggle-sim.

    python benchmarks/pseudo_labels.py --teacher-family resnet --teacher-epochs 8 \\
        --family lenet --epochs 20 --weights 0,0.5,1 --sim
    python benchmarks/pseudo_labels.py --work WORK --teacher RUN_OR_STACK --family resnet \\
        --epochs 8 --folds 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ (sim.py)

from sim import SIM, public_score, start_simulator

ROOT = Path(__file__).resolve().parents[1]


def prepare(args: argparse.Namespace, root: Path) -> tuple[Any, str | None, dict[str, Any]]:
    """The competition (KIT_WORK set), the teacher's id (None: kit's default) and notes."""
    from kit.competition import load_competition

    os.environ["KIT_SUBMISSIONS"] = str(root / "subs")
    if args.work is not None:
        os.environ["KIT_WORK"] = str(args.work)
        return load_competition(args.competition), args.teacher, {"teacher_trained_s": 0}

    from kit.data.folds import write_folds
    from kit.fetch import fetch
    from kit.training.config import parse_overrides
    from kit.training.runs import train_run

    os.environ["KIT_WORK"] = str(root / "work")
    comp = load_competition(args.competition)
    fetch(comp, args.source)
    write_folds(comp, k=args.k, seed=0)
    started = time.perf_counter()
    run = train_run(
        comp,
        args.teacher_family,
        parse_overrides(args.teacher_set),
        epochs=args.teacher_epochs,
        device=args.device,
        pictures=False,
        workers=args.workers,
    )
    return comp, run.run_id, {"teacher_trained_s": round(time.perf_counter() - started)}


def train_student(comp: Any, args: argparse.Namespace, pseudo: str, weight: float) -> Any:
    from kit.training.config import parse_overrides
    from kit.training.runs import train_run

    overrides = {**parse_overrides(args.student_set), "pseudo": pseudo, "pseudo_weight": weight}
    return train_run(
        comp,
        args.family,
        overrides,
        epochs=args.epochs,
        folds=args.folds,
        device=args.device,
        pictures=False,
        workers=args.workers,
    )


def public_of(comp: Any, path: Path, message: str, sim: bool) -> float | None:
    if not sim:
        return None
    from kit.submit import make_submission

    sub = make_submission(comp, path, subset_source="none", dry_run=True)
    return public_score(comp.kaggle_slug, sub.path, message)


def measure(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    from kit.pseudo import make_pseudo_labels

    comp, teacher, notes = prepare(args, root)
    sets = {}
    for kind in ("normal", "strict"):
        started = time.perf_counter()
        made = make_pseudo_labels(comp, teacher, strict=kind == "strict", device=args.device)
        sets[kind] = made
        print(
            f"{kind} set {made.pseudo_id}: {made.manifest.counts} in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
    manifest = sets["normal"].manifest
    rows = [
        {
            "variant": f"teacher {manifest.teacher['kind']} {manifest.teacher['id']}",
            "weight": None,
            "cv": manifest.teacher_cv,
            "public": public_of(comp, Path(manifest.teacher["path"]), "teacher", args.sim),
            "seconds": notes["teacher_trained_s"],
        }
    ]
    print(json.dumps(rows[-1]), flush=True)
    variants = [("no pseudo labels", "", 0.0)]
    for weight in args.weights:
        if weight > 0:  # weight 0 is the row without pseudo labels
            variants += [(kind, sets[kind].pseudo_id, weight) for kind in ("normal", "strict")]
    for name, pseudo, weight in variants:
        run = train_student(comp, args, pseudo, weight)
        message = f"{args.family} {name} w={weight}"
        row = {
            "variant": name,
            "weight": weight if pseudo else 0.0,
            "cv": run.cv_score,
            "public": public_of(comp, run.path, message, args.sim),
            "seconds": round(run.manifest.train_seconds),
            "run": run.run_id,
            "folds": run.manifest.folds["trained"],
            "pseudo": pseudo,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def leaks(rows: list[dict[str, Any]]) -> dict[float, float]:
    """Normal minus strict CV at each weight."""
    cv = {(r["variant"], r["weight"]): r["cv"] for r in rows}
    return {
        w: cv[("normal", w)] - cv[("strict", w)]
        for (variant, w) in cv
        if variant == "normal" and ("strict", w) in cv
    }


def markdown(rows: list[dict[str, Any]], family: str, epochs: int) -> str:
    leak = leaks(rows)
    lines = [
        f"| variant ({family}, {epochs} epochs) | pseudo weight | CV on true labels | "
        "leak: normal - strict CV | public | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        weight = "" if r["weight"] is None else f"{r['weight']:g}"
        gap = f"{leak[r['weight']]:+.4f}" if r["variant"] == "normal" else ""
        public = "" if r["public"] is None else f"{r['public']:.4f}"
        lines.append(
            f"| {r['variant']} | {weight} | {r['cv']:.4f} | {gap} | {public} | {r['seconds']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--competition", default="facial-keypoints")
    parser.add_argument("--work", type=Path, help="an existing work folder with the teacher")
    parser.add_argument("--teacher", help="run or stack id in --work (default: kit's choice)")
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared/data/fkd-proxy")
    parser.add_argument("--k", type=int, default=5, help="folds of a fresh work folder")
    parser.add_argument("--teacher-family", default="resnet")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--teacher-set", action="append", default=[], help="key=value")
    parser.add_argument("--family", default="lenet", help="the students' family")
    parser.add_argument("--epochs", type=int, default=20, help="the students' epochs")
    parser.add_argument("--student-set", action="append", default=[], help="key=value")
    parser.add_argument("--weights", default="0,0.5,1")
    parser.add_argument("--folds", type=int, help="train the first N folds only (default all)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--workers", type=int, default=1, help="folds at once")
    parser.add_argument("--sim", action="store_true", help="score at ../shared/kaggle-sim")
    parser.add_argument("--port", type=int, default=8783)
    parser.add_argument("--out", type=Path, default=Path("pseudo_labels.json"))
    args = parser.parse_args()
    args.weights = [float(w) for w in args.weights.split(",")]
    if args.work is None and not args.source.exists():
        print(f"skipped: {args.source} is missing (give --source or --work)")
        return
    if args.sim and not SIM.is_file():
        print(f"skipped: {SIM} is missing (drop --sim)")
        return
    root = Path(tempfile.mkdtemp(prefix="pseudo-labels-"))
    sim = start_simulator(args.port, root / "sim") if args.sim else None
    try:
        rows = measure(args, root)
    finally:
        if sim is not None:
            sim.terminate()
    args.out.write_text(json.dumps(rows, indent=2))
    print(markdown(rows, args.family, args.epochs))
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; files {root}")


if __name__ == "__main__":
    main()
