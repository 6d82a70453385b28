"""How long `kit predict --from STACK` takes on one photo once the stack's meta-models are saved.

Before issue 25, every `kit predict --from STACK` fitted the stack's meta-models again (45 s
on the fkd-proxy, about 7 minutes on ibug-68). Now `kit stack` saves them and `kit predict`
loads them; a stack written before that fits them once, on its first predict, and saves them.
This times whole `kit predict` commands (a fresh process each: imports, loading the base
runs' checkpoints and the meta-models included) on one photo, in the competition's existing
work folder, repeated; the first call may be the old stack's one fit, the second is the
figure. It also times loading the meta-models alone, in this process.

The photo is the first cached test image (the input crop itself, as a PNG, with --box its whole
square), unless --photo and --box are given. Nothing is trained; the stack must exist.

Run from the repo root (results merged into benchmarks/out/predict_from_stack.json, one entry
per competition and stack, so reruns replace their own entry):

    python benchmarks/predict_from_stack.py ibug-68 [--work WORK] [--stack STACK-ID]
        [--photo PHOTO --box x,y,w,h] [--repeat 2] [--device cpu] [--out FILE]
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

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "out" / "predict_from_stack.json"
sys.path.insert(0, str(REPO))  # a checkout without pip install


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("competition", help="competition name, e.g. ibug-68")
    parser.add_argument("--work", type=Path, help="work folder root (default: $KIT_WORK, ./work)")
    parser.add_argument("--stack", help="stack id or prefix (default: the best CV stack)")
    parser.add_argument("--photo", type=Path, help="a photo (default: the first test image)")
    parser.add_argument("--box", help="the photo's face box x,y,w,h (needed with --photo)")
    parser.add_argument("--repeat", type=int, default=2, help="kit predict calls (default 2)")
    parser.add_argument("--device", default="cpu", help="kit predict --device (default cpu)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON")
    return parser.parse_args(argv)


def default_photo(comp, folder: Path) -> tuple[Path, str]:
    """The first cached test image as a PNG, and the box that is its whole square."""
    from PIL import Image

    from kit.data.arrays import KeypointData

    image = KeypointData.load(comp.workspace.test_npz).images[0]
    path = folder / "test-0.png"
    Image.fromarray(image).convert("RGB").save(path)
    side = image.shape[0]
    return path, f"0,0,{side},{side}"


def time_predict(args: argparse.Namespace, stack_id: str, photo: Path, box: str, out: Path):
    """Wall seconds of one `kit predict` process, and its lines about the meta-models."""
    command = [sys.executable, "-m", "kit", "predict", args.competition, str(photo), "--box", box]
    command += ["--from", stack_id, "--out", str(out), "--device", args.device]
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"kit predict failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds, [line for line in done.stderr.splitlines() if "meta-models" in line]


def load_seconds(comp, stack_id: str) -> dict[str, Any]:
    """Reading and verifying the saved meta-models, then parsing them (LightGBM's boosters)."""
    from kit.stack.fitted import FittedStack
    from kit.store import load_stack, read_meta_models

    stack = load_stack(comp, stack_id)
    started = time.perf_counter()
    saved = read_meta_models(stack)
    if saved is None:
        return {"saved": False}
    read = time.perf_counter() - started
    FittedStack.from_export(saved)
    files = stack.manifest.meta_models["files"]
    return {
        "saved": True,
        "files": len(files),
        "bytes": sum((stack.path / rel).stat().st_size for rel in files),
        "read_verify_s": round(read, 3),
        "load_s": round(time.perf_counter() - started, 3),
    }


def merge(out: Path, key: str, entry: dict[str, Any]) -> None:
    results = json.loads(out.read_text()) if out.is_file() else {}
    results[key] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    work = args.work or Path(os.environ.get("KIT_WORK", "work"))
    os.environ["KIT_WORK"] = str(work.resolve())  # this process's and kit predict's
    if (args.photo is None) != (args.box is None):
        raise SystemExit("--photo and --box go together")
    from kit.competition import load_competition
    from kit.stack import list_stacks
    from kit.submit import resolve_source

    comp = load_competition(args.competition)
    stacks = list_stacks(comp)
    if not stacks:
        raise SystemExit(f"no finished stack of {comp.name}: run `kit stack {comp.name}` first")
    stack_id = resolve_source(comp, args.stack).id if args.stack else stacks[0].stack_id
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        photo, box = (args.photo, args.box) if args.photo else default_photo(comp, folder)
        calls = []
        for i in range(args.repeat):
            seconds, said = time_predict(args, stack_id, photo, box, folder / f"out-{i}")
            calls.append({"seconds": round(seconds, 2), "said": said})
            print(f"kit predict #{i + 1}: {seconds:.1f} s" + "".join(f"; {s}" for s in said))
    entry = {
        "competition": comp.name,
        "stack": stack_id,
        "device": args.device,
        "calls": calls,
        "meta_models": load_seconds(comp, stack_id),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    merge(args.out, f"{comp.name}/{stack_id}", entry)
    print(json.dumps(entry["meta_models"]), f"-> {args.out}")
    return entry


if __name__ == "__main__":
    main()
