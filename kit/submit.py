"""`kit submit` as a library call: a run's or a stack's test predictions -> a validated
submission file, its JSON manifest, and (unless a dry run) the Kaggle upload.

Files go to ``$KIT_SUBMISSIONS/<competition>/`` (default ``./submissions/<competition>/``) as
``<UTC-timestamp>-<name>.csv`` plus ``<same>.json``. The manifest is written before the upload
with ``uploaded: false`` and ``kaggle_ref: null``; only a ref that Kaggle returned (kit.kaggle
raises for anything else) turns it into ``uploaded: true``. A failed upload records its error
and keeps the file, so nothing is lost and nothing is marked uploaded that Kaggle did not take.
A competition without a Kaggle page (no ``kaggle_slug``) never uploads: its manifest says why
in ``upload_skipped`` and the file is kept, as for a dry run.
`kit track` reads the fields ``file``, ``cv_score`` and ``kaggle_ref``.

The competition's plug-in writes and validates the file (``write_submission``). A competition
that declares a ``[submit_split]`` in competition.toml (facial-keypoints: the seeds' "8 + 30
combined" submission) lets the images whose rows ask only for that subset's keypoints take
another source's predictions (`subset_source`). By default that is the source with the best CV
on the subset, when it is not the main source; the file's name then joins both ids with the
split's tag (``<main>+<tag>-<second>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import kit
from kit import workspace
from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import DataError, KaggleError, KitError
from kit.progress import Event, OnEvent, ignore
from kit.provenance import git_commit
from kit.stack import StackResult, list_stacks
from kit.store import RunResult, list_runs
from kit.store.files import read_json, sha256_file
from kit.store.manifests import RunManifest, StackManifest, SubmissionManifest, manifest_kind
from kit.store.predictions import SavedPredictions
from kit.store.stacks import read_table

NO_SUBSET_SOURCE = ("none", "same", "off")  # --subset-from values that turn the split off


def submissions_dir(comp: Competition) -> Path:
    """Where `comp`'s submissions and manifests go (see kit.workspace.submissions_dir)."""
    return workspace.submissions_dir(comp.name)


# ------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """A finished run or stack whose test predictions can be submitted."""

    kind: str  # "run" or "stack"
    id: str
    saved: SavedPredictions  # its folder: manifest, oof.npy, test.npy

    @property
    def path(self) -> Path:
        return self.saved.path

    @property
    def manifest(self) -> RunManifest | StackManifest:
        return self.saved.manifest

    @property
    def test(self) -> np.ndarray:
        """(M, K', 2) input pixels; columns = `keypoints`."""
        return self.saved.test

    @property
    def keypoints(self) -> list[int]:
        return self.saved.keypoints

    @property
    def cv_score(self) -> float:
        return self.saved.cv_score

    def group_score(self, group: str) -> float | None:
        """CV score on a named keypoint subset (e.g. "nose"), if it predicts all of it."""
        value = self.manifest.cv.get("per_group", {}).get(group)
        return None if value is None else float(value)

    @property
    def run_ids(self) -> list[str]:
        if self.kind == "run":
            return [self.id]
        return [r["run_id"] for r in self.manifest.runs]

    def covers(self, keypoints: list[int]) -> bool:
        return set(keypoints) <= set(self.keypoints)

    @property
    def complete(self) -> bool:
        """A stack, or a run trained on every fold (not a tuning trial or a quick run)."""
        return self.kind == "stack" or bool(self.manifest.folds.get("complete", False))

    def full_test(self, num_keypoints: int) -> np.ndarray:
        """(M, K, 2) with NaN for the keypoints it does not predict."""
        out = np.full((len(self.test), num_keypoints, 2), np.nan, np.float64)
        out[:, self.keypoints] = self.test
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "path": str(self.path),
            "cv_score": self.cv_score,
            "keypoints": len(self.keypoints),
            "family": getattr(self.manifest, "family", None),
        }


def list_sources(comp: Competition) -> list[Source]:
    """Every finished run and stack of `comp`, best CV first."""
    sources = [Source("run", r.run_id, r) for r in list_runs(comp)]
    sources += [Source("stack", s.stack_id, s) for s in list_stacks(comp)]
    return sorted(sources, key=lambda s: s.cv_score)


def resolve_source(comp: Competition, name: str | Path) -> Source:
    """A run or stack by id, unique id prefix, or folder path."""
    path = Path(name)
    if (path / "manifest.json").is_file():
        return _same_competition(comp, _folder_source(path))
    text = str(name).strip()
    sources = list_sources(comp)
    exact = [s for s in sources if s.id == text]
    matches = exact or [s for s in sources if s.id.startswith(text)]
    if len(matches) == 1:
        return _same_competition(comp, matches[0])  # a folder copied in from elsewhere
    known = ", ".join(s.id for s in sources[:8]) or "none"
    if not matches:
        raise KitError(
            f"no finished run or stack {text!r} of {comp.name}",
            hint=f"known (best first): {known}",
        )
    raise KitError(
        f"{text!r} matches {len(matches)} runs and stacks of {comp.name}",
        hint=f"give more of the id: {', '.join(s.id for s in matches[:5])}",
    )


def _folder_source(path: Path) -> Source:
    """A run or stack folder given by path (it may lie outside the work folder)."""
    manifest = path / "manifest.json"
    try:
        data = read_json(manifest)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the manifest: {exc}", path=manifest) from exc
    if not isinstance(data, dict):
        raise DataError("the manifest is not a JSON object", path=manifest)
    kind = manifest_kind(data)[0] or ("stack" if "stack_id" in data else "run")
    if kind == "stack":
        stack = StackManifest.from_json(data, manifest)
        table = read_table(path)
        return Source("stack", stack.stack_id, StackResult(stack.stack_id, path, stack, table))
    run = RunManifest.from_json(data, manifest)
    return Source("run", run.run_id, RunResult(run.run_id, path, run))


def _same_competition(comp: Competition, source: Source) -> Source:
    """A run or stack of another competition predicts other keypoints of other images."""
    theirs = source.manifest.competition
    if theirs != comp.name:
        raise KitError(
            f"{source.kind} {source.id} ({source.path}) is a {source.kind} of {theirs}, "
            f"not of {comp.name}",
            hint=f"give a run or stack of {comp.name} (`kit report {comp.name}` lists them)",
        )
    return source


def default_source(comp: Competition) -> Source:
    """The best-CV stack or run trained on every fold that predicts every keypoint."""
    everything = list(range(comp.num_keypoints))
    full = [s for s in list_sources(comp) if s.complete and s.covers(everything)]
    if not full:
        raise KitError(
            f"no finished run or stack of {comp.name} predicts every keypoint",
            hint=f"run `kit train {comp.name} MODEL` (or kit tune / kit stack), or give --from",
        )
    return full[0]


def default_subset_source(comp: Competition, main: Source) -> Source | None:
    """The stack or complete run with the best CV on the keypoints of the competition's
    split subset (`Competition.submit_split`), if it is not `main` (None then, or when the
    competition declares no split)."""
    if comp.submit_split is None:
        return None
    subset = comp.submit_split.subset
    keypoints = comp.subset_indices(subset)
    scored = [
        (score, s)
        for s in list_sources(comp)
        if s.complete and s.covers(keypoints) and (score := s.group_score(subset)) is not None
    ]
    if not scored:
        return None
    best = min(scored, key=lambda pair: pair[0])[1]
    return None if best.id == main.id else best


def _check_fresh(comp: Competition, source: Source, test: KeypointData) -> None:
    """The source's test predictions must belong to the cached test split as it is now."""
    recorded = source.manifest.data.get("test")
    stale = recorded is not None and recorded != sha256_file(comp.workspace.test_npz)
    if stale or len(source.test) != len(test):
        raise DataError(
            f"{source.kind} {source.id} predicted another test split "
            f"({len(source.test)} rows; the cache has {len(test)})",
            path=comp.workspace.test_npz,
            hint=f"retrain or restack on the current data of {comp.name}",
        )


# ------------------------------------------------------------------------- the submission


@dataclass
class SubmissionResult:
    path: Path  # the CSV
    manifest_path: Path
    manifest: SubmissionManifest  # replaced (and rewritten) when the upload ends

    @property
    def uploaded(self) -> bool:
        return self.manifest.uploaded

    @property
    def kaggle_ref(self) -> int | None:
        return self.manifest.kaggle_ref


def _file_stem(comp: Competition, folder: Path, main: Source, second: Source | None) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    split = comp.submit_split
    name = main.id if second is None or split is None else f"{main.id}+{split.tag}-{second.id}"
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", name)[:120]
    stem, n = f"{stamp}-{name}", 2
    while (folder / f"{stem}.csv").exists():  # two submissions in one second
        stem, n = f"{stamp}-{name}-{n}", n + 1
    return stem


def _resolve_subset_source(comp: Competition, main: Source, subset_source: str | Path | None):
    if subset_source is None:
        return default_subset_source(comp, main)
    if str(subset_source).strip().lower() in NO_SUBSET_SOURCE:
        return None
    if comp.submit_split is None:
        raise KitError(
            f"--subset-from: {comp.name} declares no subset whose images may take a second source",
            hint="a [submit_split] in its competition.toml declares one; leave --subset-from out",
        )
    subset = comp.submit_split.subset
    second = resolve_source(comp, subset_source)
    if not second.covers(comp.subset_indices(subset)):
        raise KitError(
            f"--subset-from {second.id} does not predict every keypoint of the {subset!r} subset"
        )
    return None if second.id == main.id else second


def make_submission(
    comp: Competition,
    source: Path | str | None = None,
    *,
    subset_source: Path | str | None = None,
    message: str = "",
    dry_run: bool = True,
    on_event: OnEvent = ignore,
) -> SubmissionResult:
    """Write the submission of `source` (default: the best-CV run or stack predicting every
    keypoint), its manifest, and upload it unless `dry_run`.

    `subset_source`, for a competition with a ``[submit_split]``: the source of the images
    that ask only for the split subset's keypoints. None picks the best source on them;
    "none" turns the split off; else a run or stack id.
    """
    main = resolve_source(comp, source) if source is not None else default_source(comp)
    everything = list(range(comp.num_keypoints))
    if not main.covers(everything) and comp.submittable_subset(main.keypoints) is None:
        subsets = ", ".join(comp.submit_subsets)
        raise KitError(
            f"{main.kind} {main.id} predicts {len(main.keypoints)} of {comp.num_keypoints} "
            "keypoints; the submission needs all of them"
            + (f" or exactly the subset {subsets}" if subsets else ""),
            hint="give --from a run or stack that predicts every keypoint",
        )
    second = _resolve_subset_source(comp, main, subset_source)
    test = KeypointData.load(comp.workspace.test_npz)
    for used in (main, second):
        if used is not None:
            _check_fresh(comp, used, test)

    folder = submissions_dir(comp)
    stem = _file_stem(comp, folder, main, second)
    csv_path, manifest_path = folder / f"{stem}.csv", folder / f"{stem}.json"
    subsets = None
    if second is not None and comp.submit_split is not None:
        subsets = {comp.submit_split.subset: second.full_test(comp.num_keypoints)}
    info = comp.plugin.write_submission(
        csv_path,
        comp,
        comp.workspace.raw,
        test,
        main.full_test(comp.num_keypoints),
        subsets,
    )
    message = message or _default_message(comp, main, second)
    manifest = _manifest(comp, csv_path, main, second, info, message, dry_run)
    manifest.write(manifest_path)
    result = SubmissionResult(csv_path, manifest_path, manifest)
    if not dry_run and comp.on_kaggle:
        upload(comp, result, on_event=on_event)
    elif not dry_run:
        on_event(Event("submit", "step", text=f"not uploaded: {manifest.upload_skipped}"))
    return result


def _default_message(comp: Competition, main: Source, second: Source | None) -> str:
    text = f"kit {main.kind} {main.id} (CV {main.cv_score:.4f})"
    if second is None or comp.submit_split is None:
        return text
    return f"{text}; {comp.submit_split.subset} keypoints from {second.id}"


def _manifest(comp, csv_path, main: Source, second: Source | None, info, message, dry_run):
    used = [main] + ([second] if second is not None else [])
    runs = list(dict.fromkeys(run for s in used for run in s.run_ids))
    subset = None if comp.submit_split is None else comp.submit_split.subset
    cv = {"source": main.manifest.cv}
    if subset is not None:
        cv[subset] = None if second is None else second.group_score(subset)
    return SubmissionManifest(
        competition=comp.name,
        kaggle_slug=comp.kaggle_slug,
        file=csv_path.name,
        csv=str(csv_path),
        csv_sha256=sha256_file(csv_path),
        cv_score=main.cv_score,
        metric=comp.metric,
        cv=cv,
        source=main.describe(),
        subset_source=None if second is None else second.describe(),
        subset=subset,
        runs=runs,
        stack=main.id if main.kind == "stack" else None,
        stacks=[s.id for s in used if s.kind == "stack"],
        settings={
            "subset_rule": f"images whose rows ask only for the {subset} subset take subset_source"
            if second is not None
            else "off",
            **info,
        },
        message=message,
        dry_run=dry_run,
        upload_skipped=None if comp.on_kaggle else no_kaggle_page(comp),
        git_commit=git_commit(),
        kit=kit.__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def no_kaggle_page(comp: Competition) -> str:
    """Why a competition without a Kaggle page never uploads (the manifest's upload_skipped)."""
    return f"{comp.name} has no Kaggle page, so there is nothing to upload to; the file is kept"


def upload(comp: Competition, result: SubmissionResult, on_event: OnEvent = ignore) -> int:
    """Upload a written submission; record Kaggle's ref (or the error) in its manifest."""
    slug = comp.require_kaggle("nothing to upload to", hint=f"the file is kept: {result.path}")
    from kit import kaggle  # late: the kaggle client is slow and noisy to import

    try:
        ref = kaggle.submit(slug, result.path, result.manifest.message)
    except KaggleError as exc:
        result.manifest = result.manifest.replace(
            uploaded=False, kaggle_ref=None, upload_error=str(exc)
        )
        result.manifest.write(result.manifest_path)
        raise KaggleError(str(exc), hint=f"not uploaded; the file is kept: {result.path}") from exc
    result.manifest = result.manifest.replace(
        uploaded=True,
        kaggle_ref=ref,
        upload_error=None,
        dry_run=False,
        uploaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    result.manifest.write(result.manifest_path)
    on_event(Event("submit", "step", text=f"Kaggle accepted the submission, ref {ref}"))
    return ref
