"""GPU check: one command that proves kit's CUDA path and measures it, in at most 8 minutes.

On a machine with a GPU, from the repo root, with the prepared folder `.gpu/` beside the code:

    python3 benchmarks/gpu_check.py --device cuda

Here (no GPU), once, to build `.gpu/` (git-ignored): wheels of the packages the GPU machine's
image lacks, for its Python 3.12, and a copy of the FKD proxy:

    python benchmarks/gpu_check.py --prepare

In CI and the tests, on the CPU in under a minute (tiny data, no compile, short budgets):

    python benchmarks/gpu_check.py --device cpu --quick

Steps, each timed and recorded as ok / failed / skipped, so one failure loses none of the others:
  packages    install what is missing from .gpu/wheels (--no-deps: the machine's torch stays)
              and kit itself (--no-deps), into a scratch folder put on PYTHONPATH
  environment device, torch, CUDA, bf16 support
  tests       pytest -m device --device DEVICE (augmentation, loss, train + resume, TTA, OOF leak)
  throughput  every family: kit's loop (auto, channels_last, bf16, compile each on and off)
              against the plain DataLoader loop; target kit auto >= 3x plain on a GPU
  run         kit run facial-keypoints --budget 4m --device DEVICE on the FKD proxy; its CV
  tune        kit tune --gpus 0,0 (two workers on one GPU) for one minute; --workers 2 on a CPU
Writes gpu_check.json and gpu_check.md under $OUT when it is set, else benchmarks/out/gpu_check/.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PREPARED = REPO / ".gpu"
WHEELS = PREPARED / "wheels"
FKD_COPY = PREPARED / "data" / "fkd-proxy"
SHARED_FKD = REPO.parent / "shared" / "data" / "fkd-proxy"
DEFAULT_OUT = REPO / "benchmarks" / "out" / "gpu_check"

# The GPU machine (device tool, nvidia-h200): Python 3.12 with a CUDA torch, numpy, scipy,
# pandas, matplotlib, rich, typer ...; no kaggle, lightgbm or optuna (KINDS.md, 2026-11-17).
GPU_PYTHON = "3.12"
GPU_PLATFORMS = (
    "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
    "manylinux2014_x86_64", "manylinux1_x86_64",
)  # fmt: skip
MISSING_THERE = ("kaggle", "lightgbm", "optuna")  # import names == distribution names
# Too large to carry (64 MiB for code, wheels and data) and already in the GPU image.
NOT_CARRIED = ("numpy", "scipy", "torch", "pandas", "matplotlib", "pillow")
SITE = Path(tempfile.gettempdir()) / "kit-gpu-site"
COMP = "facial-keypoints"

FAMILY_ORDER = ("resnet", "heatmap", "convbn", "lenet", "sp")  # most GPU-relevant first


@dataclass(frozen=True)
class Settings:
    """How big each step is: the full check on a GPU, or --quick on a CPU."""

    device: str
    quick: bool
    images: int  # synthetic faces per throughput epoch
    rounds: int
    variants: tuple[str, ...]  # kit loop variants timed (train_throughput.VARIANTS)
    throughput_seconds: float  # compile variants are dropped once this is spent
    run_budget: str
    run_args: tuple[str, ...]
    tune_seconds: str
    tune_args: tuple[str, ...]
    tests_timeout: float

    @classmethod
    def of(cls, device: str, quick: bool) -> Settings:
        if quick:
            return cls(
                device, True, images=16, rounds=1, variants=("auto",), throughput_seconds=0,
                run_budget="15s", run_args=("--families", "lenet", "--epochs", "1", "--folds", "2"),
                tune_seconds="3s", tune_args=("--families", "lenet", "--epochs", "1"),
                tests_timeout=120,
            )  # fmt: skip
        return cls(
            device, False, images=2048, rounds=3, throughput_seconds=150, run_budget="4m",
            variants=("auto", "baseline", "channels_last", "bf16", "compile"),
            run_args=(), tune_seconds="1m", tune_args=("--families", "resnet"), tests_timeout=180,
        )  # fmt: skip


@dataclass
class Step:
    name: str
    status: str = "skipped"  # ok, failed, skipped
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""


# ---------------------------------------------------------------- preparing .gpu/ here


def prepare(wheels: Path = WHEELS, data: Path = FKD_COPY) -> None:
    """Wheels for the GPU machine's Python of kit's dependencies at the versions installed
    here (tested), with theirs, except NOT_CARRIED; the FKD proxy's files."""
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in kit_requirements()]
    if wheels.exists():
        shutil.rmtree(wheels)
    platforms = [arg for p in GPU_PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
            "--python-version", GPU_PYTHON, "--implementation", "cp", *platforms,
            "-d", str(wheels), *pins,
        ],
        check=True,
    )  # fmt: skip
    for wheel in wheels.glob("*.whl"):
        if distribution(wheel) in NOT_CARRIED:
            wheel.unlink()
    if not SHARED_FKD.is_dir():
        raise SystemExit(f"{SHARED_FKD}: the FKD proxy is not there; copy it to {data} by hand")
    data.mkdir(parents=True, exist_ok=True)
    for path in SHARED_FKD.iterdir():
        if path.suffix in (".zip", ".csv"):
            shutil.copyfile(path, data / path.name)
    size = sum(p.stat().st_size for p in PREPARED.rglob("*") if p.is_file())
    print(f"prepared {PREPARED}: {len(list(wheels.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB")


def kit_requirements() -> list[str]:
    """The distributions kit depends on (not its extras), less NOT_CARRIED."""
    names = []
    for requirement in importlib.metadata.requires("kit") or []:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()
        if name not in NOT_CARRIED:
            names.append(name)
    return names


def distribution(wheel: Path) -> str:
    """A wheel's normalised project name: 'SQLAlchemy-2.0-...whl' -> 'sqlalchemy'."""
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


# ---------------------------------------------------------------- the steps


def step_packages(settings: Settings) -> dict[str, Any]:
    """Install what this Python lacks (`install_missing`); torch must be the same after."""
    import torch

    torch_before = torch.__version__
    result = install_missing()
    import torch as torch_after

    return {**result, "torch_unchanged": torch_after.__version__ == torch_before}


def install_missing(wheels: Path = WHEELS) -> dict[str, Any]:
    """The wheels of every distribution this Python lacks, then kit, both --no-deps into a fresh
    SITE (on PYTHONPATH for this process and its children). Needs no torch. kit runs from the
    repo even when its own install fails, so that failure is recorded, not raised."""
    lacking = [name for name in MISSING_THERE if importlib.util.find_spec(name) is None]
    chosen: list[Path] = []
    if lacking:
        if not wheels.is_dir():
            raise RuntimeError(f"{', '.join(lacking)} missing and no {wheels}: run --prepare")
        chosen = [w for w in sorted(wheels.glob("*.whl")) if not _has(distribution(w))]
    kit_missing = not _has("kit")
    kit_error = ""
    if chosen or kit_missing:
        shutil.rmtree(SITE, ignore_errors=True)  # nothing stale from another Python
        _pip_target(chosen)
        if kit_missing:
            try:
                _pip_target([REPO], build=True)
            except subprocess.CalledProcessError as exc:
                kit_error = f"pip install --no-deps kit: exit {exc.returncode}; ran from the repo"
    _use_site(SITE if chosen or kit_missing else None)
    missing = [name for name in MISSING_THERE if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(f"still not importable: {', '.join(missing)}")
    return {
        "lacking": lacking,
        "installed": [w.name for w in chosen],
        "kit_installed": kit_missing and not kit_error,
        "kit_install_error": kit_error,
        "versions": {n: importlib.metadata.version(n) for n in MISSING_THERE},
    }


def _has(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _pip_target(paths: list[Path], build: bool = False) -> None:
    if not paths:
        return
    extra = ["--no-build-isolation"] if build else []
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
            "--no-compile", "--no-cache-dir", "--upgrade", *extra, "--target", str(SITE),
            *map(str, paths),
        ],
        check=True,
    )  # fmt: skip


def _use_site(site: Path | None) -> None:
    """`site` (when given) and the repo on this process's and its children's import path."""
    paths = [str(site)] if site else []
    for path in (*paths, str(REPO)):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [*paths, str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    importlib.invalidate_caches()


def step_environment(settings: Settings) -> dict[str, Any]:
    import torch

    from kit.training.device import resolve_device

    device = resolve_device(settings.device)
    info: dict[str, Any] = {
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": torch.cuda.get_device_name(device),
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "cudnn": torch.backends.cudnn.version(),
        }
    else:
        info["bf16_supported"] = "cpu autocast only (no native bf16 check)"
    for key, value in info.items():
        print(f"  {key}: {value}", flush=True)
    return info


def step_tests(settings: Settings) -> dict[str, Any]:
    files = ["tests/test_augment.py", "tests/test_models.py", "tests/test_train.py"]
    command = [
        sys.executable, "-m", "pytest", "-m", "device", "--device", settings.device,
        "-p", "no:cacheprovider", *files,
    ]  # fmt: skip
    proc = _run(command, settings.tests_timeout)
    summary = _pytest_summary(proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"pytest exit {proc.returncode}: {summary}\n{proc.stdout[-3000:]}")
    return {"summary": summary, "command": " ".join(command[1:])}


def _pytest_summary(output: str) -> str:
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    return lines[-1].strip(" =") if lines else "no summary line"


def step_throughput(settings: Settings) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    import train_throughput as tt

    from kit.data.synthetic import fkd15_from_68, make_faces
    from kit.models import list_models
    from kit.training.device import configure_cpu_threads, resolve_device

    device = resolve_device(settings.device)
    if device.type == "cpu":
        configure_cpu_threads()
    faces, landmarks = make_faces(settings.images, 96, seed=0)
    keypoints = fkd15_from_68(landmarks)
    pipeline = tt.measure_pipeline(device, faces, keypoints, batch_size=min(64, len(faces)))
    print(f"  input pipeline: kit/plain {pipeline['ratio']}x", flush=True)
    deadline = time.monotonic() + settings.throughput_seconds
    families = [f for f in FAMILY_ORDER if f in list_models()]
    families += [f for f in list_models() if f not in families]
    rows, skipped, errors = [], [], {}
    for family in families:
        names = list(settings.variants)
        if "compile" in names and time.monotonic() > deadline:  # its warm-up is the long part
            names.remove("compile")
            skipped.append(f"{family}: compile (time)")
        try:
            row = _measure_family(tt, family, device, faces, keypoints, settings.rounds, names)
        except Exception as exc:  # one family's failure keeps the others' figures
            errors[family] = f"{type(exc).__name__}: {exc}"[:1000]
            print(f"  {family} FAILED: {errors[family]}", flush=True)
            continue
        rows.append(row)
        print("  " + tt.markdown_table([row]).splitlines()[-1], flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not rows:
        raise RuntimeError(f"no family measured: {errors}")
    auto = {row["family"]: row["vs_plain"]["auto"] for row in rows}
    return {
        "pipeline": pipeline,
        "rows": rows,
        "skipped": skipped,
        "errors": errors,
        "auto_vs_plain": auto,
        "target_3x_met": {family: ratio >= 3.0 for family, ratio in auto.items()},
        "table": tt.markdown_table(rows),
    }


def _measure_family(tt, family, device, faces, keypoints, rounds, names) -> dict[str, Any]:
    """train_throughput.measure; if a variant with compile fails, the row without it."""
    try:
        return tt.measure(family, device, faces, keypoints, rounds, [tt.VARIANTS[n] for n in names])
    except Exception as exc:
        if "compile" not in names:
            raise
        names = [n for n in names if n != "compile"]
        row = tt.measure(family, device, faces, keypoints, rounds, [tt.VARIANTS[n] for n in names])
        return {**row, "compile_error": f"{type(exc).__name__}: {exc}"[:1000]}


def step_run(settings: Settings, scratch: Path, out: Path) -> dict[str, Any]:
    data = _competition_data(settings, scratch)
    budget = settings.run_budget
    command = [
        sys.executable, "-m", "kit", "run", "facial-keypoints", "--from", str(data),
        "--budget", budget, "--device", settings.device, *settings.run_args,
    ]  # fmt: skip
    from kit.pipeline import parse_budget

    proc = _run(command, parse_budget(budget) + 180, env=_work_env(scratch))
    if proc.returncode != 0:
        raise RuntimeError(f"kit run exit {proc.returncode}:\n{proc.stdout[-3000:]}")
    work = scratch / "work" / "facial-keypoints"
    runs = []
    for manifest in sorted(work.glob("runs/*/manifest.json")):
        m = json.loads(manifest.read_text())
        runs.append(
            {
                "run_id": m["run_id"],
                "family": m["family"],
                "cv": m["cv"]["overall"],
                "folds": m["folds"]["trained"],
                "train_seconds": round(m["train_seconds"], 1),
                "speed": sorted({json.dumps(s) for s in m["fold_speeds"].values()}),
            }
        )
    submissions = sorted((scratch / "submissions" / "facial-keypoints").glob("*.json"))
    kept = json.loads(submissions[-1].read_text()) if submissions else {}
    csvs = sorted((scratch / "submissions" / "facial-keypoints").glob("*.csv"))
    if csvs:  # score it at the simulator later, where there is one
        shutil.copyfile(csvs[-1], out / "submission.csv")
    return {
        "command": " ".join(command[3:]),
        "cv": kept.get("cv_score"),
        "runs": runs,
        "submission_manifest": kept,
        "output_tail": proc.stdout[-1500:],
    }


def step_tune(settings: Settings, scratch: Path) -> dict[str, Any]:
    import torch

    data = _competition_data(settings, scratch)
    env = _work_env(scratch)
    if not (scratch / "work" / COMP / "folds.csv").is_file():  # when the `run` step failed
        for setup in (["fetch", COMP, "--from", str(data)], ["folds", COMP]):
            proc = _run([sys.executable, "-m", "kit", *setup], 300, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"kit {setup[0]} exit {proc.returncode}:\n{proc.stdout[-2000:]}")
    on_gpu = settings.device.startswith("cuda") and torch.cuda.is_available()
    index = settings.device.partition(":")[2] or "0"
    workers = ["--gpus", f"{index},{index}"] if on_gpu else ["--workers", "2", "--device", "cpu"]
    command = [
        sys.executable, "-m", "kit", "tune", "facial-keypoints", *workers,
        "--timeout", settings.tune_seconds, "--best", "0", *settings.tune_args,
    ]  # fmt: skip
    proc = _run(command, 300, env=env)
    logs = sorted((scratch / "work" / "facial-keypoints" / "tune-logs").glob("worker-*.log"))
    if proc.returncode != 0:
        raise RuntimeError(f"kit tune exit {proc.returncode}:\n{proc.stdout[-3000:]}")
    return {
        "command": " ".join(command[3:]),
        "workers": len(logs),
        "worker_log_tails": {p.name: p.read_text(errors="replace")[-400:] for p in logs},
        "trials_table": proc.stdout[-3000:],
    }


def _competition_data(settings: Settings, scratch: Path) -> Path:
    """The FKD proxy copy (full check), or a small FKD-format competition kit draws (--quick)."""
    if not settings.quick:
        for folder in (FKD_COPY, SHARED_FKD):
            if (folder / "training.zip").is_file():
                return folder
        raise RuntimeError(f"no FKD proxy at {FKD_COPY}: run --prepare where ../shared exists")
    folder = scratch / "quick-data"
    if not (folder / "training.csv").is_file() and not (folder / "training.zip").is_file():
        from kit.competition import load_competition

        comp = load_competition("facial-keypoints")
        comp.plugin.write_example(folder, comp, 96, 16, 0)
    return folder


def _work_env(scratch: Path) -> dict[str, str]:
    return {
        **os.environ,
        "KIT_WORK": str(scratch / "work"),
        "KIT_SUBMISSIONS": str(scratch / "submissions"),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "120",
    }


def _run(
    command: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run from the repo root, output captured (stderr into stdout); a timeout is an error."""
    try:
        return subprocess.run(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or b"")[-2000:]
        text = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise RuntimeError(
            f"timed out after {timeout:.0f} s: {' '.join(command)}\n{text}"
        ) from None


# ---------------------------------------------------------------- running and reporting


def run_check(settings: Settings, out: Path) -> list[Step]:
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="kit-gpu-check-"))
    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("packages", lambda: step_packages(settings)),
        ("environment", lambda: step_environment(settings)),
        ("tests", lambda: step_tests(settings)),
        ("throughput", lambda: step_throughput(settings)),
        ("run", lambda: step_run(settings, scratch, out)),
        ("tune", lambda: step_tune(settings, scratch)),
    ]
    steps = []
    for name, action in plan:
        step = Step(name)
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            step.result = action()
            step.status = "ok"
        except Exception as exc:  # record it and go on: one GPU call must bring back everything
            step.status, step.error = "failed", f"{exc}\n{traceback.format_exc()[-2000:]}"
            print(f"  FAILED: {str(exc)[:2000]}", flush=True)
        step.seconds = round(time.perf_counter() - started, 1)
        steps.append(step)
        write_report(settings, steps, out)  # after every step: a timeout keeps what was done
    shutil.rmtree(scratch, ignore_errors=True)
    return steps


def write_report(settings: Settings, steps: list[Step], out: Path) -> None:
    report = {
        "settings": settings.__dict__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "steps": [step.__dict__ for step in steps],
    }
    _atomic_write(out / "gpu_check.json", json.dumps(report, indent=2, default=str))
    _atomic_write(out / "gpu_check.md", markdown(settings, steps))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def markdown(settings: Settings, steps: list[Step]) -> str:
    lines = [
        f"# kit GPU check ({settings.device}{', quick' if settings.quick else ''})",
        "",
        "| step | status | seconds | result |",
        "| --- | --- | ---: | --- |",
    ]
    for step in steps:
        lines.append(f"| {step.name} | {step.status} | {step.seconds} | {_brief(step)} |")
    by_name = {step.name: step for step in steps}
    throughput = by_name.get("throughput")
    if throughput and throughput.status == "ok" and "table" in throughput.result:
        lines += ["", "## Training throughput (images/s)", "", throughput.result["table"]]
    run = by_name.get("run")
    if run and run.status == "ok" and run.result.get("runs"):
        lines += ["", "## kit run", "", "| run | family | CV | train s |"]
        lines += ["| --- | --- | ---: | ---: |"]
        lines += [
            f"| {r['run_id']} | {r['family']} | {r['cv']:.4f} | {r['train_seconds']} |"
            for r in run.result["runs"]
        ]
    failed = [step for step in steps if step.status == "failed"]
    for step in failed:
        lines += ["", f"## {step.name} failed", "", "```", step.error[-3000:], "```"]
    return "\n".join(lines) + "\n"


def _brief(step: Step) -> str:
    """One line about a step; a result it cannot read never costs the report."""
    if step.status != "ok":
        return step.error.splitlines()[0][:160] if step.error else ""
    try:
        return _summary_line(step.name, step.result)
    except (KeyError, TypeError, ValueError) as exc:
        return f"(no summary: {exc!r})"


def _summary_line(name: str, r: dict[str, Any]) -> str:
    if name == "packages":
        return f"installed {len(r['installed'])} wheels; torch unchanged: {r['torch_unchanged']}"
    if name == "environment":
        return ", ".join(f"{k} {r.get(k)}" for k in ("gpu", "torch", "cuda", "bf16_supported"))
    if name == "tests":
        return r["summary"]
    if name == "throughput":
        return "kit auto / plain: " + ", ".join(f"{f} {v}x" for f, v in r["auto_vs_plain"].items())
    if name == "run":
        return f"submission CV {r['cv']}; runs: " + ", ".join(
            f"{x['family']} {x['cv']:.4f}" for x in r["runs"]
        )
    if name == "tune":
        return f"{r['workers']} workers: {r['command']}"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a start-up check")
    parser.add_argument("--prepare", action="store_true", help="build .gpu/ here, then stop")
    parser.add_argument("--out", type=Path, default=None, help="default: $OUT or benchmarks/out")
    args = parser.parse_args(argv)
    if args.prepare:
        prepare()
        return 0
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else DEFAULT_OUT)
    steps = run_check(Settings.of(args.device, args.quick), out)
    print((out / "gpu_check.md").read_text())
    return 0 if all(step.status == "ok" for step in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
