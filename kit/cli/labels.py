"""Short, unique labels for keypoints and models, and the legend that maps them back.

An 80-column table cut `left_eye_center` and `left_eye_inner_corner` to the same `left_e…`, so
no row could be told from another. Labels here are made short enough to print whole and are
checked to be unique; where a rule cannot make them so, numbered keys (k01, m1) take over.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MAX_KEYPOINT = 11  # `mouth.c.bot`: longer keypoint labels cost every row of a narrow table
MAX_MODEL = 8  # about a score's width (`12.3456`), so a model's column is no wider than its values
# Words of keypoint names and their short forms; "" drops a word that adds nothing once short
# (`left_eye_inner_corner` -> `L.eye.in`). Other words over 5 letters keep their first 4.
WORDS = {
    "left": "L",
    "right": "R",
    "center": "c",
    "centre": "c",
    "inner": "in",
    "outer": "out",
    "upper": "up",
    "lower": "lo",
    "bottom": "bot",
    "middle": "mid",
    "eyebrow": "brow",
    "corner": "",
    "end": "",
    "lip": "",
}
_HASHED = re.compile(r"^(?P<family>[a-z][a-z0-9_]*)-(?P<hash>[0-9a-f]{6,})$")


def abbreviate(name: str) -> str:
    """`left_eye_inner_corner` -> `L.eye.in`: the words of a name, each in its short form."""
    words = [w for w in re.split(r"[_\-\s.]+", name) if w]
    short = [_short_word(w) for w in words]
    return ".".join(w for w in short if w) or name


def _short_word(word: str) -> str:
    if word.lower() in WORDS:
        return WORDS[word.lower()]
    return word if len(word) <= 5 or word.isdigit() else word[:4]


def keypoint_labels(names: Sequence[str], reserved: Iterable[str] = ()) -> dict[str, str]:
    """Name -> label. Names that all fit stay as they are (ibug-68's `jaw_00`); otherwise
    every name is abbreviated alike, and numbered k01.. where abbreviations would collide."""
    if all(len(n) <= MAX_KEYPOINT for n in names) and _usable(names, names, reserved):
        return {n: n for n in names}
    short = [abbreviate(n) for n in names]
    if _usable(short, names, reserved) and all(len(s) <= MAX_KEYPOINT for s in short):
        return dict(zip(names, short, strict=True))
    return _numbered(names, "k")


def model_labels(run_ids: Sequence[str], reserved: Iterable[str] = ()) -> dict[str, str]:
    """Run id -> label: `heatmap-265e7e7aab93` -> `heat.26`, the family's first letters and the
    shortest start of the hash that tells the run from the others (m1.. when ids differ in
    form)."""
    parts = [_HASHED.match(r) for r in run_ids]
    if not all(parts):
        short = list(run_ids)
        ok = all(len(s) <= MAX_MODEL for s in short) and _usable(short, run_ids, reserved)
        return dict(zip(run_ids, short, strict=True)) if ok else _numbered(run_ids, "m")
    heads = [m["family"][:4] for m in parts if m]
    hashes = [m["hash"] for m in parts if m]
    labels = []
    for head, digest in zip(heads, hashes, strict=True):
        rivals = [h for f, h in zip(heads, hashes, strict=True) if f == head and h != digest]
        sizes = range(2, len(digest) + 1)
        size = next((n for n in sizes if all(r[:n] != digest[:n] for r in rivals)), len(digest))
        labels.append(f"{head}.{digest[:size]}")
    if _usable(labels, run_ids, reserved) and all(len(s) <= MAX_MODEL for s in labels):
        return dict(zip(run_ids, labels, strict=True))
    return _numbered(run_ids, "m")


def legend(labels: dict[str, str], notes: dict[str, str] | None = None) -> str:
    """`L.eye.c left_eye_center, ...`: each label that differs from its name (and a note after
    it, e.g. a model's CV); empty when every label is its name."""
    notes = notes or {}
    parts = [
        f"{label} {name}" + (f" ({notes[name]})" if name in notes else "")
        for name, label in labels.items()
        if label != name
    ]
    return ", ".join(parts)


def _usable(labels: Sequence[str], names: Sequence[str], reserved: Iterable[str]) -> bool:
    """Unique, and none of them another column's or row's name (`overall`, `blend`)."""
    taken = set(reserved)
    return len(set(labels)) == len(names) and not taken & set(labels)


def _numbered(names: Sequence[str], prefix: str) -> dict[str, str]:
    width = len(str(len(names))) if prefix == "m" else max(2, len(str(len(names))))
    return {n: f"{prefix}{i:0{width}d}" for i, n in enumerate(names, 1)}
