"""Build kit run's portfolio with Optuna, across the competitions: a resumable, multi-fidelity
search, every good configuration trained on every competition, then a zero-shot selection.

    python benchmarks/build_portfolio.py [--competitions facial-keypoints,ibug-68,imm-58]
        [--families heatmap,resnet,lenet,convbn] [--trials 24] [--epochs 30] [--top 2]
        [--size 6] [--budgets 10,30,100,300,1000,3000] [--device cpu] [--timeout 2h]
        [--phases search,cross,ladder,select] [--work work/portfolio] [--out PATH]

Phases (each resumes where the last run stopped; the work folder keeps everything):
1. search: per competition and family, `kit.tuning.tune` with the Hyperband pruner: epochs are
   the fidelity (fold 0 reported at each 10 % of its --epochs), trials that trail are stopped
   early. The studies live in each competition's tune.sqlite3 (Optuna resumes them).
2. cross: the --top complete configurations of every family and competition, each trained on
   fold 0 of EVERY competition (content-addressed runs: a rerun reuses them), so that each has
   a learning curve and a cost per epoch everywhere.
3. ladder: the best configuration of each family (its mean fold-0 score over the
   competitions) scaled up and down in width, depth, input size and heatmap stride (LADDER),
   each variant trained like the cross phase, cheapest family first: a search at the highest
   fidelity prunes the costly configurations long before their curves pay, and a faster
   machine needs them in the portfolio.
4. select: `kit.planning.zeroshot.select` over those curves, normalised per competition by its
   mean shape's fold-0 score, at each --budgets value (seconds of one fold's training): the
   set of configurations whose best member errs least on average, greedily, as AutoGluon
   builds its zero-shot portfolios. Writes the portfolio TOML (default benchmarks/out/
   portfolio.toml; `--out kit/models/portfolio.toml` replaces kit run's) with the evidence of
   every entry (its mean curve, and its curve per competition, which the planner judges it by
   there), keeping the existing entries of other devices (a `--device cuda` run adds GPU
   entries beside the CPU ones).

The data is fetched from ../shared/data (fkd-proxy, ibug-68-proxy, imm-58-proxy) into the work
folder (default work/portfolio, git-ignored) when missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout without `pip install -e .`

import numpy as np  # noqa: E402

from kit.competition import Competition, load_competition  # noqa: E402
from kit.data.arrays import KeypointData  # noqa: E402
from kit.data.folds import load_folds, write_folds  # noqa: E402
from kit.durations import parse_duration  # noqa: E402
from kit.metrics import evaluate  # noqa: E402
from kit.planning.planner import CLEAR_GAIN  # noqa: E402
from kit.planning.zeroshot import Evaluation, select  # noqa: E402
from kit.store import RunResult  # noqa: E402
from kit.store.files import sha256_json  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
SOURCES = {"facial-keypoints": "fkd-proxy", "ibug-68": "ibug-68-proxy", "imm-58": "imm-58-proxy"}
PLATEAU = 0.01  # max_epochs: where the rest of the curve gains less than 1 % of its error
# Variants of each family's best configuration, cheapest first, inside the family's space.
LADDER: dict[str, tuple[dict, ...]] = {
    "lenet": ({"width": 1}, {"width": 4}),
    "convbn": ({"width": 0.5}, {"width": 2.0}),
    "resnet": (
        {"width": 16},
        {"depth": 34},
        {"width": 64},
        {"depth": 34, "width": 48},
        {"input_scale": 2.0},
    ),
    "heatmap": ({"width": 32}, {"width": 48}, {"stride": 2}, {"width": 32, "stride": 2}),
}


FIELDS = """\
# kit run's portfolio: pre-tuned configurations the planner draws from (AutoGluon-style
# zero-shot portfolio). Each entry:
#   family      a registered model family
#   overrides   model and train settings on top of the family's defaults
#   min_epochs  the fewest epochs at which it clearly beats the mean shape; a config that
#               cannot reach them within the budget is not run
#   max_epochs  where more epochs stopped paying in the evidence; it stands for optimiser steps,
#               so on fewer training rows than fkd-proxy's 2449 kit run scales it up (for_rows)
#   devices     "cpu", "gpu" or both: where it is worth its time
#   evidence    the command that measured it, its cost per epoch and best score everywhere
#   curve       measured [epochs, fold-0 score / the mean shape's fold-0 score] points, the
#               mean over the competitions: the planner orders and lengthens runs by the score
#               expected at the epochs they can afford
#   curves      the same per competition; kit run on one of them judges the entry by its own
"""


@dataclass(frozen=True)
class Config:
    family: str
    overrides: dict

    @property
    def name(self) -> str:
        return f"{self.family}-{sha256_json(self.overrides)[:6]}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--competitions", default=",".join(SOURCES))
    parser.add_argument("--families", default="heatmap,resnet,lenet,convbn")
    parser.add_argument("--trials", type=int, default=24, help="finished trials per family study")
    parser.add_argument("--epochs", type=int, default=30, help="the highest fidelity")
    parser.add_argument("--top", type=int, default=2, help="configs per family and competition")
    parser.add_argument("--size", type=int, default=6, help="entries in the portfolio")
    parser.add_argument("--budgets", default="10,30,100,300,1000,3000")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", help="search time per competition, e.g. 2h")
    parser.add_argument("--phases", default="search,cross,select")
    parser.add_argument("--work", type=Path, default=REPO / "work" / "portfolio")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "portfolio.toml")
    return parser.parse_args(argv)


def prepare(name: str) -> Competition:
    """The competition with its cache and a 5-fold folds file in the work folder."""
    from kit.fetch import fetch

    comp = load_competition(name)
    ws = comp.workspace
    if not (ws.train_npz.is_file() and ws.test_npz.is_file()):
        fetch(comp, SHARED / SOURCES[name])
    write_folds(comp, k=5, seed=0)
    return comp


def search(comp: Competition, args: argparse.Namespace) -> None:
    from kit.tuning import tune

    timeout = parse_duration(args.timeout, "--timeout") if args.timeout else None
    tune(
        comp, args.families.split(","), trials=args.trials, timeout=timeout, best_n=0,
        epochs=args.epochs, device=args.device, pruner="hyperband", pictures=False,
    )  # fmt: skip


def best_configs(comp: Competition, families: list[str], top: int) -> list[Config]:
    """The `top` complete trials of each family's study, best fold-0 score first."""
    from kit.tuning import tuning_table

    table = tuning_table(comp, families=families)
    done = table[table.state == "COMPLETE"].dropna(subset=["score"]).sort_values("score")
    configs = []
    for _, group in done.groupby("family", sort=False):
        for params in group["params"].head(top):
            configs.append(Config(str(group["family"].iloc[0]), dict(params)))
    return configs


def cross(comps: list[Competition], configs: list[Config], device: str) -> dict:
    """Every config trained on fold 0 of every competition: (competition, config) -> run. One
    config everywhere before the next, so an interrupted build keeps whole evidence."""
    from kit.training.runs import train_run

    runs = {}
    for config in configs:
        for comp in comps:
            run = train_run(
                comp, config.family, config.overrides, folds=1, device=device, pictures=False
            )
            runs[comp.name, config.name] = run
    return runs


def ladder(configs: list[Config], scores: dict[str, float]) -> list[Config]:
    """LADDER's variants of each family's best configuration by `scores` (lower is better),
    families in LADDER's order; variants equal to a known configuration are left out."""
    known = {c.name for c in configs}
    out = []
    for family, steps in LADDER.items():
        mine = [c for c in configs if c.family == family and c.name in scores]
        if not mine:
            continue
        best = min(mine, key=lambda c: scores[c.name])
        for step in steps:
            variant = Config(family, {**best.overrides, **step})
            if variant.name not in known:
                known.add(variant.name)
                out.append(variant)
    return out


def mean_scores(evaluations: list[Evaluation]) -> dict[str, float]:
    """Each configuration's best normalised fold-0 score, averaged over competitions."""
    per: dict[str, list[float]] = {}
    for e in evaluations:
        per.setdefault(e.config, []).append(min(e.curve))
    return {name: float(np.mean(values)) for name, values in per.items()}


def mean_shape_score(comp: Competition) -> float:
    """Fold 0's score when every row is predicted as the training rows' mean shape."""
    data = KeypointData.load(comp.workspace.train_npz)
    folds = np.asarray(load_folds(comp, data))
    train, val = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
    mean = np.nanmean(data.keypoints[train], axis=0)
    pred = np.broadcast_to(mean, (len(val), *mean.shape)).copy()
    return float(evaluate(comp, pred, data.subset(val)).overall)


def evaluation(run: RunResult, config: str, baseline: float) -> Evaluation:
    """A fold-0 run's normalised learning curve and its cost per epoch."""
    record = run.folder.fold_record(0)
    (sub,) = record.submodels.values()  # masked targets: one network
    history = sub["history"]
    curve = tuple(float(h["val_score"]) / baseline for h in history)
    epoch_seconds = float(np.mean([h["seconds"] for h in history]))
    fixed = max(0.0, record.seconds - sum(h["seconds"] for h in history))
    return Evaluation(config, run.manifest.competition, curve, epoch_seconds, fixed)


def portfolio_entry(config: Config, evaluations: list[Evaluation], device: str, note: str) -> dict:
    """One portfolio entry: the mean curve over competitions, where it clearly beats the mean
    shape (min_epochs) and where it stops paying (max_epochs), with its evidence."""
    length = min(len(e.curve) for e in evaluations)
    best_so_far = {e.competition: np.minimum.accumulate(e.curve[:length]) for e in evaluations}
    curve = np.mean(list(best_so_far.values()), axis=0)
    clear = np.flatnonzero(curve <= CLEAR_GAIN)
    min_epochs = int(clear[0]) + 1 if len(clear) else length
    final = curve[-1]
    paying = np.flatnonzero(curve - final > PLATEAU * final)
    max_epochs = max(min_epochs, int(paying[-1]) + 2 if len(paying) else 1)
    marks = sorted({1, min_epochs, max(1, max_epochs // 2), max_epochs, length})
    per_comp = "; ".join(
        f"{e.competition}: {e.epoch_seconds:.2f} s/epoch, best {min(e.curve):.3f} of the mean shape"
        for e in evaluations
    )
    return {
        "name": config.name,
        "family": config.family,
        "overrides": {k: v for k, v in config.overrides.items() if k != "epochs"},
        "min_epochs": min_epochs,
        "max_epochs": max_epochs,
        "devices": ["gpu"] if device.startswith("cuda") else ["cpu", "gpu"],
        "evidence": f"{note}; {per_comp}",
        "curve": [[e, round(float(curve[e - 1]), 3)] for e in marks],
        "curves": {
            comp: [[e, round(float(points[e - 1]), 3)] for e in marks]
            for comp, points in sorted(best_so_far.items())
        },
    }


def dump_entry(entry: dict) -> str:
    """A portfolio entry as a TOML [[config]] table."""
    lines = ["[[config]]"]
    for key, value in entry.items():
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(key: str) -> str:
    bare = key.replace("-", "").replace("_", "").isalnum() and key.isascii()
    return key if bare else _toml_value(key)


def kept_entries(path: Path, device: str) -> list[dict]:
    """The existing portfolio's entries that do not run on this device (kept beside the new)."""
    if not path.is_file():
        return []
    kind = "gpu" if device.startswith("cuda") else "cpu"
    entries = tomllib.loads(path.read_text()).get("config", [])
    return [raw for raw in entries if kind not in raw.get("devices", ["cpu", "gpu"])]


def main(argv: list[str] | None = None) -> None:
    import optuna

    args = parse_args(argv)
    os.environ.setdefault("KIT_WORK", str(args.work))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    phases = set(args.phases.split(","))
    families = args.families.split(",")
    comps = [prepare(name) for name in args.competitions.split(",")]
    if "search" in phases:
        for comp in comps:
            print(f"search: {comp.name}", flush=True)
            search(comp, args)
    configs = {c.name: c for comp in comps for c in best_configs(comp, families, args.top)}
    print(f"{len(configs)} configurations to evaluate on {len(comps)} competitions", flush=True)
    if not phases & {"cross", "ladder", "select"}:
        return
    runs = cross(comps, list(configs.values()), args.device)
    baselines = {comp.name: mean_shape_score(comp) for comp in comps}
    evaluations = [evaluation(run, name, baselines[comp]) for (comp, name), run in runs.items()]
    if "ladder" in phases:
        variants = ladder(list(configs.values()), mean_scores(evaluations))
        print(f"ladder: {len(variants)} variants on {len(comps)} competitions", flush=True)
        configs.update({c.name: c for c in variants})
        runs = cross(comps, variants, args.device)
        evaluations += [
            evaluation(run, name, baselines[comp]) for (comp, name), run in runs.items()
        ]
    if "select" not in phases:
        return
    budgets = [float(b) for b in args.budgets.split(",")]
    chosen = select(evaluations, budgets, args.size)
    today = dt.date.today().isoformat()
    note = (
        f"python benchmarks/build_portfolio.py --competitions {args.competitions} --families "
        f"{args.families} --trials {args.trials} --epochs {args.epochs} --top {args.top} "
        f"--device {args.device} --phases {args.phases} ({today}); zero-shot pick over budgets "
        f"{args.budgets} s"
    )
    entries = [
        portfolio_entry(configs[name], [e for e in evaluations if e.config == name], args.device,
                        f"{note}: portfolio error {error:.3f} once chosen")
        for name, error in chosen
    ]  # fmt: skip
    header = (
        f"# Generated by benchmarks/build_portfolio.py: rerun it, do not edit.\n# {note}\n{FIELDS}"
    )
    blocks = [dump_entry(e) for e in [*entries, *kept_entries(args.out, args.device)]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + "\n" + "\n".join(blocks))
    costs = [np.mean([e.epoch_seconds for e in evaluations if e.config == n]) for n, _ in chosen]
    if costs:
        print(f"wrote {args.out}: {len(chosen)} entries, cost per epoch spans "
              f"{max(costs) / max(min(costs), 1e-9):.1f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
