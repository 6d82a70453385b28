"""`kit predict` as a library call: trained models on your own photos (see kit.predict)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import kit
from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import DataError, KitError
from kit.predict.detect import Box, FaceDetector, HaarDetector
from kit.predict.models import predict_images
from kit.predict.output import (
    CSV_NAME,
    JSON_NAME,
    draw_keypoints,
    keypoint_frame,
    picture_names,
    run_folder,
    write_csv,
    write_png,
)
from kit.predict.photos import Failed, Framed, frame_photo, photo_plugin, read_photo
from kit.progress import Event, OnEvent, ignore
from kit.submit import Source, default_source, resolve_source
from kit.workspace import check_output_folder, write_json


@dataclass(frozen=True)
class PhotoPrediction:
    """One photo's keypoints: (K', 2) in its own pixels, and the picture drawn of them."""

    framed: Framed
    points: np.ndarray
    picture: Path


@dataclass(frozen=True)
class PredictResult:
    folder: Path
    csv: Path
    source: Source
    keypoints: list[str]  # the names of the CSV's keypoints (the source's)
    photos: list[PhotoPrediction]
    failures: list[Failed]


def predict_photos(
    comp: Competition,
    images: Sequence[str | Path],
    *,
    source: str | Path | None = None,
    out: str | Path | None = None,
    box: Box | None = None,
    detector: FaceDetector | None = None,
    device: str | None = None,
    on_event: OnEvent = ignore,
) -> PredictResult:
    """Predict the keypoints of each of `images` (photo files) with `source` (a run or stack
    id, unique prefix or folder; default: the one `kit submit` would submit) and write them.

    A competition whose network sees a face takes `box` (x, y, w, h, every photo), else the
    largest face `detector` finds (default: OpenCV's Haar cascade). A photo that cannot be
    read or framed is reported (an event) and skipped; a KitError only when none is left.
    Files go to `out`, else a new time-stamped folder under work/<comp>/predict/; `out` is
    checked first: a file, or a folder already holding a prediction's files, is refused.
    """
    paths = [Path(image) for image in images]
    if out is not None:
        check_output_folder(Path(out), "--out", [CSV_NAME, JSON_NAME, *picture_names(paths)])
    chosen = resolve_source(comp, source) if source is not None else default_source(comp)
    plugin = photo_plugin(comp)
    if plugin.photo_needs_face(comp) and box is None and detector is None:
        detector = HaarDetector()  # before any photo: without OpenCV, one line for them all
    framed, failures = [], []
    for number, path in enumerate(paths, 1):
        try:
            done: Framed | Failed = frame_photo(path, comp, plugin, box, detector)
            framed.append(done)
            text = f"{path}: {done.note}"
        except KitError as exc:
            done = Failed(path, str(exc))
            failures.append(done)
            text = done.reason
        on_event(Event("predict", "photo", number, len(images), text, done))
    if not framed:
        raise DataError(
            f"none of the {len(images)} images could be predicted",
            hint="see the line of each above",
        )
    split = photo_split(framed)
    on_event(Event("predict", "step", text=f"predicting with {chosen.kind} {chosen.id}"))
    inputs = predict_images(comp, chosen, split.images, device=device, on_event=on_event)
    points = split.to_original_coords(inputs.astype(np.float64))
    folder = Path(out) if out is not None else run_folder(comp.workspace.predict)
    return write_outputs(comp, chosen, folder, framed, points, failures)


def photo_split(framed: Sequence[Framed]) -> KeypointData:
    """The framed photos as a test split (no labels; each photo a group of its own)."""
    n = len(framed)
    ids = np.array([str(f.path) for f in framed])
    return KeypointData(
        images=np.stack([f.input for f in framed]),
        keypoints=np.full((n, 0, 2), np.nan, np.float32),
        ids=ids,
        groups=ids,
        to_original=np.stack([f.to_original for f in framed]).astype(np.float32),
    )


def write_outputs(
    comp: Competition,
    source: Source,
    folder: Path,
    framed: list[Framed],
    points: np.ndarray,
    failures: list[Failed],
) -> PredictResult:
    """keypoints.csv, a PNG per photo and predict.json in `folder` (kit.predict.output)."""
    names = [comp.keypoint_names[k] for k in source.keypoints]
    csv = folder / CSV_NAME
    write_csv(csv, keypoint_frame(framed, points, names))
    photos = []
    for f, p, name in zip(framed, points, picture_names([f.path for f in framed]), strict=True):
        write_png(folder / name, draw_keypoints(read_photo(f.path), p, f.box))
        photos.append(PhotoPrediction(f, p, folder / name))
    write_json(
        folder / JSON_NAME,
        {
            "competition": comp.name,
            "source": source.describe(),
            "keypoints": names,
            "photos": [_photo_record(p) for p in photos],
            "failures": [{"image": str(f.path), "reason": f.reason} for f in failures],
            "kit": kit.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return PredictResult(folder, csv, source, names, photos, failures)


def _photo_record(p: PhotoPrediction) -> dict:
    return {
        "image": str(p.framed.path),
        "box": None if p.framed.box is None else list(p.framed.box),
        "box_from": p.framed.box_from,
        "note": p.framed.note,
        "picture": p.picture.name,
    }
