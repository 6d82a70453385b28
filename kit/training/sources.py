"""Label sources (``--target-set sources``): one trunk, one head per annotation.

A competition whose training rows were labelled by different annotators, each with habits of
their own, declares its sources in competition.toml, each by the keypoints its rows carry::

    [sources]
    short = "a_subset"   # a subset name, "all", or a comma list (or TOML list) of keypoint names
    long = "all"

The rules:

- A training row's source is the smallest declared source (fewest keypoints; the first declared
  on a tie) whose keypoints include every keypoint the row has labelled. A row that no source
  covers is an error.
- A test row's source is the same rule applied to the keypoints the competition scores on it,
  from the plug-in's ``test_keypoints`` (kit.competition.SourcesPlugin), read from the fetched
  raw files when a run opens.
- The network has one output block (a head) per source, holding that source's keypoints. A row
  of source s learns from head s and is predicted by it; a keypoint that head s lacks (a pseudo
  label of such a keypoint, or its prediction) lives in the widest head that has it (the most
  keypoints; the first declared on a tie).

Heads are addressed as columns of widened labels (N, S * K, 2): column s * K + k is keypoint k
as source s labels it (`Heads.widen`). The training loop takes those columns as it takes plain
keypoint columns, and kit.training.flip swaps left and right partners within a block.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.competition import CONFIG_NAME, Competition
from kit.errors import KitError

if TYPE_CHECKING:
    from kit.data.arrays import KeypointData

SOURCES_TABLE = "sources"
ALL = "all"


@dataclass(frozen=True)
class Heads:
    """The label sources of a competition as the heads of one network.

    names:         the sources, in competition.toml's order
    keypoints:     each source's keypoints (competition indices, ascending)
    num_keypoints: the competition's K, the width of one block of widened labels
    """

    names: tuple[str, ...]
    keypoints: tuple[tuple[int, ...], ...]
    num_keypoints: int

    @classmethod
    def of(cls, comp: Competition) -> Heads:
        """The heads of `comp`'s ``[sources]``; a KitError naming competition.toml if it has
        none or they do not fit together."""
        where = comp.root / CONFIG_NAME
        if not comp.sources:
            raise KitError(
                f"--target-set sources: {comp.name} declares no label sources",
                path=where,
                hint=f"add a [{SOURCES_TABLE}] table that maps each source to its keypoints (a "
                'subset name, "all" or a comma list), or use --target-set masked',
            )
        keypoints = tuple(_source_keypoints(comp, spec) for spec in comp.sources.values())
        heads = cls(tuple(comp.sources), keypoints, comp.num_keypoints)
        uncovered = sorted(set(range(comp.num_keypoints)) - {k for ks in keypoints for k in ks})
        if uncovered:
            names = ", ".join(comp.keypoint_names[k] for k in uncovered)
            raise KitError(
                f"[{SOURCES_TABLE}] has no source with {names}",
                path=where,
                hint='every keypoint needs a source; declare one with "all"',
            )
        for i, a in enumerate(keypoints):
            for j in range(i):
                if a == keypoints[j]:
                    raise KitError(
                        f"[{SOURCES_TABLE}] sources {heads.names[j]} and {heads.names[i]} have "
                        "the same keypoints",
                        path=where,
                        hint="rows cannot tell them apart; keep one",
                    )
        return heads

    @property
    def columns(self) -> tuple[int, ...]:
        """The network's output columns, head after head, as columns of widened labels."""
        k = self.num_keypoints
        return tuple(h * k + p for h, points in enumerate(self.keypoints) for p in points)

    @cached_property
    def home(self) -> np.ndarray:
        """(S, K) int: the head that holds keypoint k for a row of source s (s itself when its
        keypoints include k, else the widest head that has k; -1: no head has it)."""
        member = self.member
        widest = sorted(range(len(self.names)), key=lambda h: -len(self.keypoints[h]))
        fallback = np.full(self.num_keypoints, -1, np.int64)
        for h in reversed(widest):  # the widest (first declared on a tie) is written last
            fallback[member[h]] = h
        own = np.arange(len(self.names))[:, None]
        return np.where(member, own, fallback[None, :])

    @cached_property
    def member(self) -> np.ndarray:
        """(S, K) bool: source s labels keypoint k."""
        member = np.zeros((len(self.names), self.num_keypoints), bool)
        for h, points in enumerate(self.keypoints):
            member[h, list(points)] = True
        return member

    def assign(self, labelled: np.ndarray) -> np.ndarray:
        """(N, K) bool keypoints a row has -> (N,) its source: the smallest one that covers
        them (the first declared on a tie); -1 where none does."""
        out = np.full(len(labelled), -1, np.int64)
        smallest_first = sorted(range(len(self.names)), key=lambda h: len(self.keypoints[h]))
        for h in reversed(smallest_first):  # smaller sources overwrite wider ones
            covered = ~(labelled & ~self.member[h]).any(axis=1)
            out[covered] = h
        return out

    def widen(self, values: np.ndarray, sources: np.ndarray, fill: float) -> np.ndarray:
        """Per-keypoint values (N, K, ...) (labels, or loss weights (N, K)) of rows of
        `sources` (N,) -> (N, S * K, ...): each value in the block of the head that holds its
        keypoint for its row (`home`), `fill` elsewhere."""
        k = self.num_keypoints
        out = np.full((len(values), len(self.names) * k, *values.shape[2:]), fill, values.dtype)
        home = self.home[sources]  # (N, K)
        rows, points = np.nonzero(home >= 0)
        out[rows, home[rows, points] * k + points] = values[rows, points]
        return out

    def pick(self, pred: np.ndarray, sources: np.ndarray, keypoints: tuple[int, ...]) -> np.ndarray:
        """Network output (n, len(columns), 2) of rows of `sources` (n,) -> (n, len(keypoints),
        2): each keypoint from the head that holds it for the row (`home`)."""
        k = self.num_keypoints
        position = np.full(len(self.names) * k, -1, np.int64)
        position[list(self.columns)] = np.arange(len(self.columns))
        wanted = np.asarray(keypoints, np.int64)
        index = position[self.home[sources][:, wanted] * k + wanted[None, :]]  # (n, len)
        return np.take_along_axis(pred, index[..., None], axis=1)

    def describe(self) -> dict[str, Any]:
        """As JSON (part of a run's plan); `from_description` reads it back."""
        return {
            "names": list(self.names),
            "keypoints": [list(ks) for ks in self.keypoints],
            "num_keypoints": self.num_keypoints,
        }

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> Heads:
        keypoints = tuple(tuple(ks) for ks in described["keypoints"])
        return cls(tuple(described["names"]), keypoints, int(described["num_keypoints"]))


def _source_keypoints(comp: Competition, spec: str) -> tuple[int, ...]:
    if spec.strip() == ALL:
        return tuple(range(comp.num_keypoints))
    return tuple(sorted(set(comp.subset_indices(spec.strip()))))


@dataclass(frozen=True)
class Routing:
    """The source (head index) of every training row, by its labels, and of every test row, by
    what the competition scores on it."""

    heads: Heads
    train: np.ndarray  # (N,) int
    test: np.ndarray  # (M,) int

    def counts(self, rows: np.ndarray) -> dict[str, int]:
        return {name: int(np.count_nonzero(rows == h)) for h, name in enumerate(self.heads.names)}

    def describe(self) -> dict[str, Any]:
        """Rows per source and a checksum of both arrays (hashed into the run id)."""
        digest = hashlib.sha256()
        for rows in (self.train, self.test):
            digest.update(np.ascontiguousarray(rows, np.int64).tobytes() + b"\0")
        return {
            "sha256": digest.hexdigest(),
            "train_rows": self.counts(self.train),
            "test_rows": self.counts(self.test),
        }


def route(comp: Competition, heads: Heads, train: KeypointData, test: KeypointData) -> Routing:
    """Each training row's source by its labelled keypoints, each test row's by the keypoints
    the plug-in's ``test_keypoints`` says are scored on it (from the fetched raw files)."""
    train_sources = heads.assign(np.isfinite(train.keypoints).all(axis=2))
    stray = np.flatnonzero(train_sources < 0)
    if stray.size:
        labelled = np.isfinite(train.keypoints[stray[0]]).all(axis=1)
        names = ", ".join(comp.keypoint_names[k] for k in np.flatnonzero(labelled))
        raise KitError(
            f"{stray.size} training rows have labels that no declared source covers "
            f"(row {int(stray[0])}: {names})",
            path=comp.root / CONFIG_NAME,
            hint=f'declare a source with all their keypoints in [{SOURCES_TABLE}], e.g. "all"',
        )
    return Routing(heads, train_sources, heads.assign(scored_keypoints(comp, test)))


def scored_keypoints(comp: Competition, test: KeypointData) -> np.ndarray:
    """(M, K) bool from the plug-in's ``test_keypoints`` on the fetched raw folder, checked."""
    test_keypoints = getattr(comp.plugin, "test_keypoints", None)
    if test_keypoints is None:
        raise KitError(
            f"--target-set sources: {comp.name}'s plug-in has no test_keypoints function to "
            "route its test rows",
            path=comp.root / comp.module_file,
            hint="add test_keypoints(raw_dir, comp, test) -> (M, K) bool "
            "(kit.competition.SourcesPlugin)",
        )
    scored = np.asarray(test_keypoints(comp.workspace.raw, comp, test))
    if scored.shape != (len(test), comp.num_keypoints) or scored.dtype != bool:
        raise KitError(
            f"test_keypoints returned {scored.dtype} {scored.shape}, not bool "
            f"{(len(test), comp.num_keypoints)}",
            path=comp.root / comp.module_file,
        )
    return scored
