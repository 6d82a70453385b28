"""What a budget buys: `kit run COMP --budget B --upload` on a fresh work folder, scored at the
Kaggle simulator (public half), one row per budget.

    python benchmarks/kit_run_budget.py --budgets 30m [--competition facial-keypoints]
        [--data ../shared/data] [--extra "--families lenet"]

imm-58 has no Kaggle page: its rows give CV alone (no --upload, no public score).
Each budget runs `python -m kit run ...` as a user would (its own KIT_WORK and KIT_SUBMISSIONS
under a temp folder), then reads the submission manifest, the plan (work/COMP/plan.json) and the
public score. Run one budget at a time on an otherwise idle machine: the wall time is the claim.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ (sim.py)

from sim import SIM, score_of, start_simulator

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"facial-keypoints": "fkd-proxy", "ibug-68": "ibug-68-proxy", "imm-58": "imm-58-proxy"}
SLUGS = {
    "facial-keypoints": "facial-keypoints-detection",
    "ibug-68": "cs194-26-fall-2021-project-5",
}


def run_budget(comp: str, budget: str, data: Path, work: Path, extra: list[str]) -> dict[str, Any]:
    env = dict(os.environ, KIT_WORK=str(work / "work"), KIT_SUBMISSIONS=str(work / "subs"))
    command = [sys.executable, "-m", "kit", "run", comp, "--from", str(data / SOURCES[comp])]
    command += ["--budget", budget, *(["--upload"] if comp in SLUGS else []), *extra]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    (work / "stdout.txt").write_text(done.stdout)
    (work / "stderr.txt").write_text(done.stderr)
    if done.returncode != 0:
        return {"budget": budget, "exit_code": done.returncode, "error": done.stderr[-1500:]}
    manifest_path = max((work / "subs" / comp).glob("*.json"), key=lambda p: p.stat().st_mtime)
    manifest = json.loads(manifest_path.read_text())
    plan_path = work / "work" / comp / "plan.json"
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else None
    return {
        "budget": budget,
        "wall_s": round(wall),
        "cv": manifest["cv_score"],
        "public": score_of(SLUGS[comp], manifest["kaggle_ref"]) if comp in SLUGS else None,
        "source": manifest["source"]["id"],
        "runs": manifest["runs"],
        "plan": plan,
        "pipeline_line": next((x for x in done.stdout.splitlines() if "pipeline:" in x), ""),
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--competition", default="facial-keypoints", choices=sorted(SOURCES))
    parser.add_argument("--budgets", default="30m")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--extra", default="", help="more kit run options, one string")
    parser.add_argument("--port", type=int, default=8782)
    parser.add_argument("--out", type=Path, default=Path("kit_run_budget.json"))
    args = parser.parse_args()
    if not (args.data / SOURCES[args.competition]).is_dir() or not SIM.is_file():
        print(f"skipped: {args.data / SOURCES[args.competition]} or {SIM} is missing")
        return
    root = Path(tempfile.mkdtemp(prefix="kit-run-budget-"))
    sim = start_simulator(args.port, root / "sim")
    rows = []
    try:
        for budget in args.budgets.split(","):
            row = run_budget(args.competition, budget, args.data, root / budget, args.extra.split())
            print(json.dumps({k: v for k, v in row.items() if k != "plan"}), flush=True)
            rows.append(row)
            args.out.write_text(json.dumps(rows, indent=2))
    finally:
        sim.terminate()
    print("| budget | wall s | stack/run CV | public | base models |")
    print("| --- | ---: | ---: | ---: | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['budget']} | failed: exit {r['exit_code']} | | | |")
            continue
        public = "-" if r["public"] is None else f"{r['public']:.4f}"
        print(f"| {r['budget']} | {r['wall_s']} | {r['cv']:.4f} | {public} | {len(r['runs'])} |")
    print(f"work: {root}")


if __name__ == "__main__":
    main()
