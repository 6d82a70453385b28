"""Folds side by side in worker processes against one process on every thread (fkd-proxy).

For each family: the first two folds of a 5-fold identity split, a fixed number of epochs,
trained (1) in this process with the threads kit picks (every idle core) and (2) by
`train_run(workers=2)`: two spawned workers, one thread each. Wall seconds of each, and the
speed-up. Nothing else may run on the machine.

    python benchmarks/fold_workers.py [--families heatmap,resnet,lenet] [--epochs 2,1,4]
        [--work DIR] [--out fold_workers.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

PROXY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fkd-proxy"


def prepare(work: Path):
    os.environ["KIT_WORK"] = str(work)
    from kit.competition import load_competition
    from kit.data.folds import write_folds
    from kit.fetch import fetch

    comp = load_competition("facial-keypoints")
    fetch(comp, PROXY)
    write_folds(comp, k=5, seed=0)
    return comp


def timed(comp, family: str, epochs: int, workers: int, seed: int) -> float:
    from kit.training.runs import train_run

    started = time.perf_counter()
    result = train_run(
        comp, family, {"seed": seed}, folds=2, epochs=epochs, device="cpu", workers=workers,
        pictures=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    shutil.rmtree(result.path)  # the next measurement trains, not reuses
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="heatmap,resnet,lenet")
    parser.add_argument("--epochs", default="2,1,4", help="per family")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("fold_workers.json"))
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fold-workers-"))
    comp = prepare(work)
    rows = []
    for family, epochs in zip(
        args.families.split(","), map(int, args.epochs.split(",")), strict=True
    ):
        one = timed(comp, family, epochs, workers=1, seed=1)
        two = timed(comp, family, epochs, workers=2, seed=2)
        rows.append({"family": family, "epochs": epochs, "one_process_s": round(one, 1),
                     "two_workers_s": round(two, 1), "speedup": round(one / two, 2)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps(rows, indent=1))
    head = ("family", "epochs x 2 folds", "one process, all threads (s)", "2 workers (s)", "x")
    print("| " + " | ".join(head) + " |\n| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        cells = (r["family"], r["epochs"], r["one_process_s"], r["two_workers_s"], r["speedup"])
        print("| " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
