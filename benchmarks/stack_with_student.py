"""Does a pseudo-labelled student help its teacher's stack? Stack the teacher's runs with and
without the student, and score both at ../shared/kaggle-sim (public half).

    python benchmarks/stack_with_student.py --work WORK --teacher STACK_ID --student RUN_ID
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ (sim.py)

from sim import public_score, start_simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--teacher", required=True, help="the teacher stack's id")
    parser.add_argument("--student", required=True, help="the student run's id")
    parser.add_argument("--competition", default="facial-keypoints")
    parser.add_argument("--port", type=int, default=8790)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="stack-student-"))
    os.environ["KIT_WORK"], os.environ["KIT_SUBMISSIONS"] = str(args.work), str(root / "subs")

    from kit.competition import load_competition
    from kit.stack import FEATURE_SETS
    from kit.stack.store import stack
    from kit.store import load_run
    from kit.store.stacks import load_stack
    from kit.submit import make_submission

    comp = load_competition(args.competition)
    teachers = [load_run(comp, r["run_id"]) for r in load_stack(comp, args.teacher).manifest.runs]
    stacks = {
        "teacher's runs": stack(comp, teachers, features=FEATURE_SETS),
        "with the student": stack(
            comp, [*teachers, load_run(comp, args.student)], features=FEATURE_SETS
        ),
    }
    sim = start_simulator(args.port, root / "sim")
    try:
        for name, result in stacks.items():
            sub = make_submission(comp, result.path, subset_source="none", dry_run=True)
            public = public_score(comp.kaggle_slug, sub.path, name)
            row = {"stack": name, "id": result.stack_id, "cv": result.cv_score, "public": public}
            print(json.dumps(row), flush=True)
    finally:
        sim.terminate()


if __name__ == "__main__":
    main()
