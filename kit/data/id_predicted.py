"""The `Id,Predicted` submission layout that class competitions use: one value per row, Ids
0, 1, 2, ... in the test images' order. The plug-ins that write it (ibug-68, imm-58) check it
here; what an Id means (which image, which coordinate) stays in each plug-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kit.errors import DataError

COLUMNS = ("Id", "Predicted")


def check_id_predicted(
    frame: pd.DataFrame,
    images: int,
    values_per_image: int,
    sample: Path | None,
    shown: str,
    *,
    noun: str,
    source: str,
) -> None:
    """Id,Predicted; Ids 0 .. images * values_per_image - 1 in order, each once; the sample
    submission's Ids where `sample` is a file; finite values. `noun` names the images in
    messages ("faces", "photos"), `source` where their order comes from ("the test XML")."""
    if tuple(frame.columns) != COLUMNS:
        raise DataError(
            f"header is {','.join(map(str, frame.columns))}, expected Id,Predicted", path=shown
        )
    ids = pd.to_numeric(frame["Id"], errors="coerce").to_numpy(np.float64)
    expected = np.arange(images * values_per_image)
    if len(ids) != len(expected):
        raise DataError(
            f"has {len(ids)} rows, expected {len(expected)} ({images} {noun} x "
            f"{values_per_image} values)",
            path=shown,
        )
    if not np.array_equal(ids, expected):
        row = int(np.argmax(ids != expected))
        raise DataError(
            f"row {row + 1} has Id {frame['Id'].iat[row]}, expected {row}",
            path=shown,
            hint=f"Ids run 0, 1, 2, ... in {source}'s order",
        )
    if sample is not None and sample.is_file():
        sample_ids = pd.read_csv(sample, usecols=["Id"])["Id"].to_numpy()
        if not np.array_equal(np.sort(sample_ids), expected):
            raise DataError(
                f"{len(expected)} Ids for {images} test {noun}, but {sample.name} has "
                f"{len(sample_ids)}",
                path=shown,
                hint=f"{source} and the sample submission disagree",
            )
    values = pd.to_numeric(frame["Predicted"], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(values).all():
        at = int(np.argmax(~np.isfinite(values)))
        raise DataError(
            f"Id {at}: Predicted {frame['Predicted'].iat[at]!r} is not a number", path=shown
        )
