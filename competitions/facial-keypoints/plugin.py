"""Kaggle "Facial Keypoints Detection" (FKD): the plug-in that kit loads (competition.toml's
``module``), its entry points gathered from the files beside it, one per job:

    reader.py      training.csv, test.csv, IdLookupTable.csv and SampleSubmission.csv: decode
                   and verify them (the numpy pixel decoder lives there)
    submission.py  the RowId,Location file that fills IdLookupTable.csv, and its checks
    example.py     a small synthetic FKD in the exact formats (`kit demo`), its answers and score
    photo.py       a user's photo as the network's input (`kit predict`)

They are loaded by path with `kit.competition.sibling_module`, as ibug-68 loads its formats.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.competition import Competition, sibling_module
from kit.data.arrays import KeypointData

reader = sibling_module(__file__, "reader")
submission = sibling_module(__file__, "submission")
example = sibling_module(__file__, "example")
photo = sibling_module(__file__, "photo")

# The reader's names that kit, the tests and the benchmarks reach through the plug-in.
DEFAULT_FILES = reader.DEFAULT_FILES
file_name, keypoint_columns = reader.file_name, reader.keypoint_columns
read_training, read_test, decode_images = (
    reader.read_training,
    reader.read_test,
    reader.decode_images,
)
read_lookup, check_sample_submission = reader.read_lookup, reader.check_sample_submission
# The submission file (CompetitionPlugin.write_submission).
write_submission, check_submission = submission.write_submission, submission.check_submission
check_submission_frame = submission.check_submission_frame
# The synthetic example (ExamplePlugin).
write_example, write_example_answers = example.write_example, example.write_example_answers
score_example, score_example_submission = example.score_example, example.score_example_submission
example_test_truth, blank_like_fkd = example.example_test_truth, example.blank_like_fkd
# A user's photo (PhotoPlugin).
photo_needs_face, photo_input = photo.photo_needs_face, photo.photo_input
PHOTO_CROP_SIDE, PHOTO_CROP_SHIFT = photo.PHOTO_CROP_SIDE, photo.PHOTO_CROP_SHIFT


# --- the plug-in interface -------------------------------------------------------------------


def required_files(comp: Competition) -> list[str]:
    return [file_name(comp, key) for key in DEFAULT_FILES]


def load(raw_dir: Path, comp: Competition) -> tuple[KeypointData, KeypointData]:
    """Parse and verify all four files; returns (train, test) at comp.input_size.

    A DataError names the file as the competition names it (fetch parses in a staging folder),
    the row (1-based data row, or ImageId in test.csv) and the field.
    """
    train = read_training(raw_dir / file_name(comp, "train_file"), comp)
    test = read_test(raw_dir / file_name(comp, "test_file"), comp)
    lookup = read_lookup(raw_dir, comp, test_ids=test.ids)
    check_sample_submission(raw_dir / file_name(comp, "sample_submission"), lookup)
    return train, test


def test_keypoints(raw_dir: Path, comp: Competition, test: KeypointData) -> np.ndarray:
    """(M, K) bool: the keypoints IdLookupTable.csv asks for each test image (x or y), in
    `test`'s row order; ``--target-set sources`` routes an image by them (kit.training.sources):
    the 8 values of the "eight" subset to the "eight" source's head, 30 to the "full" one's."""
    lookup = read_lookup(raw_dir, comp, test_ids=test.ids)
    keypoint, _ = reader.feature_index(comp, lookup)
    asked = np.zeros((len(test), comp.num_keypoints), bool)
    asked[reader.lookup_rows(test, lookup), keypoint] = True
    return asked
