"""Competitions are plug-ins: ``competitions/<name>/competition.toml`` plus a small module.

The TOML file holds the declarative facts (slug, keypoints, flip pairs, input size, metric,
subsets, the subsets submitted alone, the subset whose submission rows may come from a second
source, target sets of its own, label sources, reader options); the module named by
``module`` holds the format code, declared by `CompetitionPlugin` (what fetch and submit call),
`ExamplePlugin` (what `kit demo` calls on the competition it draws), `SourcesPlugin` (what
``--target-set sources`` calls on a competition that declares ``[sources]``) and `PhotoPlugin`
(what `kit predict` calls to turn a user's photo into the network's input: the face crop, or
the whole photo, and where its pixels lie in the photo). kit never imports a competition by
name, so adding a third competition is a new folder and no change inside ``kit/``.

``kaggle_slug`` is optional: a competition without one (a class competition, say) has no Kaggle
page (`Competition.on_kaggle` is false), so `kit fetch` needs ``--from``, `kit submit` and
`kit run --upload` keep the file without uploading, and `kit track` has no leaderboard to read.
"""

from __future__ import annotations

import importlib.util
import os
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kit.errors import KitError
from kit.workspace import Workspace

if TYPE_CHECKING:
    import numpy as np

    from kit.data.arrays import KeypointData

PATH_ENV = "KIT_COMPETITIONS"
CONFIG_NAME = "competition.toml"


@runtime_checkable
class CompetitionPlugin(Protocol):
    """The functions every competition module defines (module-level functions)."""

    def required_files(self, comp: Competition) -> list[str]:
        """Raw files that must exist after unpacking."""

    def load(self, raw_dir: Path, comp: Competition) -> tuple[KeypointData, KeypointData]:
        """Parse and verify the raw files: (train, test), in input pixels."""

    def write_submission(
        self,
        path: Path,
        comp: Competition,
        raw_dir: Path,
        test: KeypointData,
        predictions: np.ndarray,
        subset_predictions: dict[str, np.ndarray] | None = None,
    ) -> dict[str, int]:
        """Write the competition's submission file from (M, K, 2) test predictions."""


@runtime_checkable
class ExamplePlugin(Protocol):
    """What `kit demo` also calls on the competition it draws (facial-keypoints today)."""

    def write_example(
        self, folder: Path, comp: Competition, n_train: int, n_test: int, seed: int
    ) -> Path:
        """A small synthetic competition in the exact raw formats."""

    def write_example_answers(
        self, path: Path, comp: Competition, n_train: int, n_test: int, seed: int
    ) -> None:
        """The true keypoints of `write_example`'s test images, in the plug-in's own format."""

    def score_example(
        self,
        comp: Competition,
        raw_dir: Path,
        answers_path: Path,
        test: KeypointData,
        predictions: np.ndarray,
    ) -> float:
        """The competition's score of (M, K, 2) test predictions against those answers."""

    def score_example_submission(
        self, comp: Competition, raw_dir: Path, answers_path: Path, csv_path: Path
    ) -> float:
        """The competition's score of a submission file against those answers."""


@runtime_checkable
class SourcesPlugin(Protocol):
    """What ``--target-set sources`` also calls (kit.training.sources), for a competition whose
    competition.toml declares ``[sources]``."""

    def test_keypoints(self, raw_dir: Path, comp: Competition, test: KeypointData) -> np.ndarray:
        """(M, K) bool: the keypoints the competition scores on each test row (in `test`'s
        order); a test row goes to the head of the smallest source that covers them."""


@runtime_checkable
class PhotoPlugin(Protocol):
    """What `kit predict` calls to bring a user's photo to the network's input."""

    def photo_needs_face(self, comp: Competition) -> bool:
        """True when the network's input is a face crop: a box is needed (--box or the
        detector)."""

    def photo_input(
        self, image: np.ndarray, comp: Competition, box: tuple[float, float, float, float] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """From an (H, W, 3) uint8 RGB photo: the (S, S) uint8 gray network input
        (S = comp.input_size) and its (2, 3) float affine from input pixels to the photo's
        pixels (the same convention as KeypointData.to_original). `box` = (x, y, w, h) of the
        face in the photo's pixels; None when photo_needs_face is False."""


def load_module(path: Path, name: str) -> ModuleType:
    """The module in file `path` (a plug-in lives outside any package, so it is loaded by path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise KitError("cannot load the competition module", path=path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sibling_module(plugin_file: str | Path, name: str) -> ModuleType:
    """`name`.py beside a plug-in's file: how a plug-in split into several files loads its
    parts (``formats = sibling_module(__file__, "formats")``)."""
    path = Path(plugin_file).with_name(f"{name}.py")
    folder = path.parent.name.replace("-", "")
    return load_module(path, f"kit_competition_{folder}_{name}")


def search_path() -> list[Path]:
    """Folders holding competition definitions: $KIT_COMPETITIONS, ./competitions, kit's own."""
    extra = [Path(p) for p in os.environ.get(PATH_ENV, "").split(os.pathsep) if p]
    bundled = Path(__file__).resolve().parents[1] / "competitions"
    return [*extra, Path("competitions"), bundled]


def available() -> list[str]:
    names = {p.parent.name for d in search_path() if d.is_dir() for p in d.glob(f"*/{CONFIG_NAME}")}
    return sorted(names)


@dataclass(frozen=True)
class SubmitSplit:
    """competition.toml's ``[submit_split]``: the submission rows of an image that asks only for
    `subset`'s keypoints may come from a second run or stack (`kit submit --subset-from`);
    `tag` marks such a file's name (``<source>+<tag>-<second source>.csv``)."""

    subset: str
    tag: str


@dataclass(frozen=True)
class SubsetTargetSet:
    """A target set of competition.toml's ``[target_sets]``: sub-model `subset_model` on the
    rows that have all of `subset`'s keypoints, `full_model` on complete rows; the merged
    prediction takes the subset's keypoints from the first and the rest from the second."""

    subset: str
    subset_model: str
    full_model: str


@dataclass(frozen=True)
class Competition:
    name: str
    root: Path
    keypoint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    input_size: int
    metric: str
    kaggle_slug: str = ""  # "" = no Kaggle page (see `on_kaggle`)
    subsets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Label sources: name -> the keypoints its rows are labelled with, as a subset name, "all"
    # or a comma list of keypoint names (kit.training.sources; --target-set sources).
    sources: dict[str, str] = field(default_factory=dict)
    # Subsets whose predictions may be submitted alone (a class competition's part 1); the
    # plug-in's write_submission gets NaN for every other keypoint and writes their own file.
    submit_subsets: tuple[str, ...] = ()
    # The subset whose images' submission rows may come from a second source (kit.submit);
    # None: every row comes from one source.
    submit_split: SubmitSplit | None = None
    # Target sets of its own, beside kit's (kit.training.targets): name -> the pair of models.
    target_sets: dict[str, SubsetTargetSet] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    module_file: str = "plugin.py"
    demo: bool = False  # its plug-in draws example data (ExamplePlugin): `kit demo` may use it

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for worker processes without the loaded plug-in module (reloaded there)."""
        state = dict(self.__dict__)
        state.pop("plugin", None)
        return state

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def on_kaggle(self) -> bool:
        """Whether the competition has a Kaggle page to download from, submit to and track."""
        return bool(self.kaggle_slug)

    def require_kaggle(self, why: str, hint: str) -> str:
        """The Kaggle slug, or a one-line error saying what cannot be done without a page."""
        if not self.on_kaggle:
            raise KitError(f"{self.name} has no Kaggle page: {why}", hint=hint)
        return self.kaggle_slug

    @property
    def workspace(self) -> Workspace:
        return Workspace.for_competition(self.name)

    @cached_property
    def plugin(self) -> ModuleType:
        return load_module(self.root / self.module_file, f"kit_competition_{self.name}")

    def subset_indices(self, subset: str) -> list[int]:
        """Indices of a named keypoint subset (e.g. "nose"), or of an explicit comma list."""
        names = self.subsets.get(subset) or tuple(s.strip() for s in subset.split(","))
        unknown = [n for n in names if n not in self.keypoint_names]
        if unknown:
            raise KitError(
                f"unknown keypoint or subset {', '.join(unknown)!s}",
                hint=f"subsets: {', '.join(self.subsets) or 'none'}",
            )
        return [self.keypoint_names.index(n) for n in names]

    def submittable_subset(self, keypoints: list[int]) -> str | None:
        """The `submit_subsets` subset whose keypoints are exactly `keypoints`, if any."""
        wanted = sorted(keypoints)
        return next(
            (s for s in self.submit_subsets if sorted(self.subset_indices(s)) == wanted), None
        )

    def flip_permutation(self) -> list[int]:
        """Keypoint order after a horizontal flip (left and right swap)."""
        perm = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm


def _parse_config(path: Path) -> Competition:
    try:
        cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise KitError(f"cannot read competition config: {exc}", path=path) from exc
    try:
        names = tuple(cfg["keypoints"])
        index = {n: i for i, n in enumerate(names)}
        pairs = tuple((index[a], index[b]) for a, b in cfg.get("flip_pairs", []))
        subsets = {k: tuple(v) for k, v in cfg.get("subsets", {}).items()}
        return Competition(
            name=cfg["name"],
            root=path.parent,
            kaggle_slug=_kaggle_slug(cfg.get("kaggle_slug"), path),
            keypoint_names=names,
            flip_pairs=pairs,
            input_size=int(cfg["input_size"]),
            metric=cfg["metric"],
            subsets=subsets,
            sources={k: _keypoint_spec(v) for k, v in cfg.get("sources", {}).items()},
            submit_subsets=tuple(cfg.get("submit_subsets", ())),
            submit_split=_submit_split(cfg.get("submit_split"), subsets, path),
            target_sets={
                name: _target_set(name, spec, subsets, path)
                for name, spec in cfg.get("target_sets", {}).items()
            },
            options=cfg.get("options", {}),
            module_file=cfg.get("module", "plugin.py"),
            demo=bool(cfg.get("demo", False)),
        )
    except KeyError as exc:
        raise KitError(f"competition config lacks or misnames {exc}", path=path) from exc


def _kaggle_slug(value: Any, path: Path) -> str:
    """The optional slug: absent or empty means the competition has no Kaggle page."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise KitError(
            f"kaggle_slug must be a string, not {value!r}",
            path=path,
            hint="leave it out for a competition without a Kaggle page",
        )
    return value.strip()


def _submit_split(
    value: Any, subsets: dict[str, tuple[str, ...]], path: Path
) -> SubmitSplit | None:
    """``[submit_split]``: subset (one of [subsets]) and tag (default: the subset's name)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("subset"), str):
        raise KitError("submit_split needs subset = NAME (one of [subsets])", path=path)
    subset = value["subset"]
    _check_subset(f"submit_split.subset {subset!r}", subset, subsets, path)
    return SubmitSplit(subset, str(value.get("tag", subset)))


def _target_set(
    name: str, value: Any, subsets: dict[str, tuple[str, ...]], path: Path
) -> SubsetTargetSet:
    """A ``[target_sets]`` entry: { subset = NAME, models = [SUBSET_MODEL, FULL_MODEL] }."""
    spec = value if isinstance(value, dict) else {}
    subset, models = spec.get("subset"), spec.get("models")
    named = isinstance(models, list) and all(isinstance(m, str) for m in models)
    if not (isinstance(subset, str) and named and len(set(models)) == len(models) == 2):
        raise KitError(
            f"target_sets.{name} needs subset = NAME and models = [two different names]",
            path=path,
        )
    _check_subset(f"target_sets.{name}'s subset {subset!r}", subset, subsets, path)
    return SubsetTargetSet(subset, models[0], models[1])


def _check_subset(what: str, subset: str, subsets: dict[str, tuple[str, ...]], path: Path) -> None:
    if subset not in subsets:
        raise KitError(
            f"{what} is not in [subsets]",
            path=path,
            hint=f"subsets: {', '.join(subsets) or 'none'}",
        )


def _keypoint_spec(value: str | list[str]) -> str:
    """A [sources] value: a subset name, "all" or a comma list; a TOML list of names is joined."""
    return ",".join(value) if isinstance(value, list) else str(value)


def demo_competition() -> Competition:
    """The first competition on the search path whose config says ``demo = true``."""
    for name in available():
        comp = load_competition(name)
        if comp.demo:
            return comp
    raise KitError(
        "no competition offers a demo",
        hint=f"set demo = true in a {CONFIG_NAME} whose plug-in has the ExamplePlugin functions",
    )


def load_competition(name: str) -> Competition:
    """Find ``<name>/competition.toml`` on the search path and load it."""
    for folder in search_path():
        path = folder / name / CONFIG_NAME
        if path.is_file():
            return _parse_config(path)
    raise KitError(
        f"unknown competition {name!r}",
        hint=f"available: {', '.join(available()) or 'none'}",
    )
