"""Any images through a finished run or stack, as they predicted their own test split.

A run: every trained fold's checkpoint (kit.training.runs.fold_predictions: its sub-models
merged as its target set merges them, flip TTA as the run used it), averaged over the folds as
its test.npy is. A run with one head per label source routes each image to a head by the
keypoints asked of it (`scored`, (n, K) bool; None: every keypoint, which is a photo's case).

A stack: the meta-models `kit stack` saved in its folder (kit.store.meta_models, checksums
verified; kit.stack.fitted) on its base runs' predictions of the images, exactly as they
predicted its test split. A stack written before the meta-models were saved has them fitted
again once (`refit_stack`: the stack's own algorithm, settings, base runs, the cached training
data and folds; checked to pick the same methods and to reproduce its test.npy) and saved, so
that only the first predict takes as long as `kit stack` took.
"""

from __future__ import annotations

import numpy as np

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import KitError
from kit.progress import Event, OnEvent, ignore
from kit.provenance import data_checksums, folds_checksum
from kit.stack import LIGHTGBM_DEFAULTS, BaseModel, StackResult, StackSettings, stack_predictions
from kit.stack.fitted import FittedStack
from kit.store import RunResult, load_run, read_meta_models, save_meta_models
from kit.submit import Source
from kit.training.checkpoint import fold_predictions
from kit.training.device import configure_cpu_threads, device_images, resolve_device
from kit.training.targets import TargetPlan

# An old stack's meta-models fitted again must give its test.npy (float32) to within this.
REPRODUCE_PX = 1e-3


def predict_images(
    comp: Competition,
    source: Source,
    images: np.ndarray,
    scored: np.ndarray | None = None,
    *,
    device: str | None = None,
    on_event: OnEvent = ignore,
) -> np.ndarray:
    """(n, K', 2) float32 input-pixel predictions of `source` for uint8 (n, S, S) `images`,
    columns = `source.keypoints`; for the cached test split (with its `scored` keypoints)
    they are the source's test.npy."""
    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        configure_cpu_threads()
    if isinstance(source.saved, RunResult):
        return run_predictions(comp, source.saved, images, scored, torch_device)
    assert isinstance(source.saved, StackResult)
    return stack_test(comp, source.saved, images, scored, torch_device, on_event)


def run_predictions(
    comp: Competition, run: RunResult, images: np.ndarray, scored: np.ndarray | None, device
) -> np.ndarray:
    """The mean over `run`'s trained folds of each fold model's predictions."""
    sources = row_sources(comp, run, len(images), scored)
    tensor = device_images(np.require(images, np.uint8, ["C", "W"]), device)  # torch: writable
    folds = list(run.manifest.folds["trained"])
    if not folds:
        raise KitError(f"run {run.run_id} has no trained fold")
    preds = [fold_predictions(comp, run, fold, device, (tensor, sources))[0] for fold in folds]
    return np.mean(preds, axis=0).astype(np.float32)


def row_sources(
    comp: Competition, run: RunResult, n: int, scored: np.ndarray | None
) -> np.ndarray | None:
    """Each image's head for a run with one head per label source (else None): the smallest
    source that covers the keypoints asked of it (all of them by default), or the widest."""
    heads = TargetPlan.from_description(run.manifest.plan).heads
    if heads is None:
        return None
    asked = np.ones((n, comp.num_keypoints), bool) if scored is None else np.asarray(scored)
    widest = max(range(len(heads.names)), key=lambda h: len(heads.keypoints[h]))
    sources = heads.assign(asked)
    return np.where(sources < 0, widest, sources)


def stack_test(
    comp: Competition,
    stack: StackResult,
    images: np.ndarray,
    scored: np.ndarray | None,
    device,
    on_event: OnEvent = ignore,
) -> np.ndarray:
    """The stack's saved meta-models on its base runs' predictions of `images`; its picked
    method per keypoint (columns = its keypoint_indices)."""
    fitted = stack_models(comp, stack, on_event)
    tests = []
    for run_id in stack.run_ids:  # in the stack's order
        run = load_run(comp, run_id)
        test = np.full((len(images), comp.num_keypoints, 2), np.nan, np.float64)
        test[:, run.keypoints] = run_predictions(comp, run, images, scored, device)
        tests.append(test)
    picked = fitted.predict(tests, images)
    return picked[:, stack.manifest.keypoint_indices].astype(np.float32)


def stack_models(comp: Competition, stack: StackResult, on_event: OnEvent = ignore) -> FittedStack:
    """The meta-models `kit stack` saved (checksums verified), or, for a stack written before
    they were saved, fitted again once and saved beside its predictions."""
    saved = read_meta_models(stack)
    if saved is not None:
        return FittedStack.from_export(saved)
    took = f"kit stack took {stack.manifest.seconds:.0f} s"
    text = f"stack {stack.stack_id} has no saved meta-models (an older kit's): fitting them once"
    on_event(Event("predict", "step", text=f"{text} ({took}) and saving them"))
    fitted = refit_stack(comp, stack, on_event)
    save_meta_models(stack, fitted.export())
    return fitted


def refit_stack(comp: Competition, stack: StackResult, on_event: OnEvent = ignore) -> FittedStack:
    """The stack's meta-models fitted again as `kit stack` fitted them (its settings, base runs,
    the cached training data, folds and test split), checked to pick the same methods and to
    reproduce its test.npy."""
    from kit.data.folds import load_folds  # the folds stage owns the file format

    manifest = stack.manifest
    check_stack_inputs(comp, stack)
    data = KeypointData.load(comp.workspace.train_npz)
    test_images = KeypointData.load(comp.workspace.test_npz).images
    folds = np.asarray(load_folds(comp, data), np.int64)
    bases = [BaseModel.from_run(comp, load_run(comp, run_id)) for run_id in stack.run_ids]
    settings = StackSettings(
        features=frozenset(manifest.features),
        lightgbm=dict(manifest.lightgbm or LIGHTGBM_DEFAULTS),
    )
    outcome = stack_predictions(comp, data, test_images, folds, bases, settings, on_event)
    hint = f"the stacking code changed since; rerun `kit stack {comp.name}`"
    if outcome.picks != manifest.picks:
        changed = sorted(k for k, v in outcome.picks.items() if manifest.picks.get(k) != v)
        raise KitError(
            f"stack {stack.stack_id} fitted again picks other methods for {', '.join(changed)} "
            "than it did",
            path=stack.path,
            hint=hint,
        )
    assert outcome.fitted is not None
    again = outcome.fitted.predict([b.test for b in bases], test_images)
    gap = np.abs(again[:, manifest.keypoint_indices] - stack.test).max(initial=0.0)
    if not gap <= REPRODUCE_PX:  # not <=: NaN too
        raise KitError(
            f"stack {stack.stack_id} fitted again predicts its test split {gap:.2g} px away "
            "from its test.npy",
            path=stack.path,
            hint=hint,
        )
    return outcome.fitted


def check_stack_inputs(comp: Competition, stack: StackResult) -> None:
    """The stack refits on the cached training data and folds: they must be what it used."""
    manifest = stack.manifest
    if manifest.data.get("train") != data_checksums(comp)["train"]:
        problem = "other cached training data"
    elif manifest.folds.get("sha256") != folds_checksum(comp):
        problem = "another folds file"
    else:
        return
    raise KitError(
        f"stack {stack.stack_id} was fitted on {problem}: its meta-models cannot be fitted again",
        path=stack.path,
        hint=f"rerun `kit stack {comp.name}`, or predict with one of its runs (--from RUN)",
    )
