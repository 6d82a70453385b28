"""The face net (kit.data.identity._face_net, _chips): dlib's weights file read into torch, the
chips, the embedder choice, and with the real weights installed (kit[faces]) dlib's own
descriptors and IMM's people."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from kit.data import identity
from kit.data.identity import _chips, _face_net, _face_weights
from kit.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# ------------------------------------------------------- a dlib-format file with random weights


def _int(value: int) -> bytes:
    raw = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(raw) | (0x80 if value < 0 else 0)]) + raw


def _string(text: str) -> bytes:
    return _int(len(text)) + text.encode()


def _tensor(values: np.ndarray) -> bytes:
    shape = list(values.shape) + [1] * (4 - values.ndim)
    head = _int(2) + b"".join(_int(s) for s in shape)
    return head + values.astype("<f4").tobytes()


def _alias(*shape: int) -> bytes:
    return _int(1) + b"".join(_int(s) for s in shape)


def _conv(rng: np.random.Generator, out: int, fan_in: int, k: int, stride: int) -> tuple:
    weight = rng.normal(0, np.sqrt(2 / (fan_in * k * k)), (out, fan_in, k, k)).astype(np.float32)
    bias = rng.normal(0, 0.1, out).astype(np.float32)
    pad = k // 2 if stride == 1 else 0
    blob = _string("con_4") + _tensor(np.concatenate([weight.ravel(), bias]))
    blob += b"".join(_int(v) for v in (out, k, k, stride, stride, pad, pad))
    blob += _alias(out, fan_in, k, k) + _alias(1, out) + _int(1) * 8  # multipliers (floats)
    return blob, weight, bias


def _affine(rng: np.random.Generator, channels: int) -> tuple:
    gamma = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    beta = rng.normal(0, 0.1, channels).astype(np.float32)
    blob = _string("affine_") + _tensor(np.concatenate([gamma, beta]))
    return blob + _alias(1, channels) + _alias(1, channels) + _int(1), gamma, beta


def write_random_face_net(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """dlib's layout (header, layers with and without parameters, input side first)."""
    rng = np.random.default_rng(seed)
    blob = _int(1) + _string("loss_metric_2") + _string("input_rgb_image_sized")
    conv, stem_w, stem_b = _conv(rng, 32, 3, 7, 2)
    aff, stem_g, stem_beta = _affine(rng, 32)
    blob += conv + aff + _string("relu_") + _string("max_pool_2")
    fan_in = 32
    for stage, (channels, count) in enumerate(_face_weights.STAGES):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            for j in range(2):
                conv, *_ = _conv(rng, channels, fan_in if j == 0 else channels, 3, stride)
                aff, *_ = _affine(rng, channels)
                blob += conv + aff + _string("relu_") * (j == 0)
                stride = 1
            blob += _string("add_prev_") + _string("relu_")
            fan_in = channels
    projection = rng.normal(0, 0.1, (256, 128)).astype(np.float32)
    blob += _string("avg_pool_") + _string("fc_2") + _int(128) + _int(256) + _tensor(projection)
    path.write_bytes(blob + _int(0) * 6)
    return {"stem_w": stem_w, "stem_b": stem_b, "stem_g": stem_g, "stem_beta": stem_beta}


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("face_net") / _face_weights.WEIGHTS_FILE
    return path, write_random_face_net(path)


def test_reader_folds_each_affine_into_its_convolution(random_weights: tuple) -> None:
    path, written = random_weights
    net = _face_net.FaceNet(*_face_weights.read_dlib_face_net(path))
    stem = net.stem.conv
    assert (stem.stride, stem.padding, stem.kernel_size) == ((2, 2), (0, 0), (7, 7))
    scale = written["stem_g"][:, None, None, None]
    np.testing.assert_allclose(stem.weight.detach().numpy(), written["stem_w"] * scale, rtol=1e-6)
    bias = written["stem_b"] * written["stem_g"] + written["stem_beta"]
    np.testing.assert_allclose(stem.bias.detach().numpy(), bias, rtol=1e-6)
    downs = [b.down for b in net.blocks]
    assert downs == [False] * 3 + [True] + [False] * 3 + [True, False, False] * 2 + [True]
    x = torch.rand(2, 3, 150, 150)
    out = net(x)
    assert out.shape == (2, 128) and torch.isfinite(out).all()
    # The folded convolution is the convolution followed by dlib's affine.
    raw = torch.nn.functional.conv2d(x, torch.from_numpy(written["stem_w"]), stride=2)
    raw = raw + torch.from_numpy(written["stem_b"])[:, None, None]
    raw = raw * torch.from_numpy(written["stem_g"])[:, None, None]
    raw = raw + torch.from_numpy(written["stem_beta"])[:, None, None]
    torch.testing.assert_close(net.stem(x), raw, rtol=1e-4, atol=1e-4)


def test_a_damaged_weights_file_names_itself(random_weights: tuple, tmp_path: Path) -> None:
    path, _ = random_weights
    cut = tmp_path / "cut.dat"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="not dlib's face-net weights") as err:
        _face_weights.read_dlib_face_net(cut)
    assert str(err.value).startswith(str(cut))


def test_residual_sum_of_unequal_sizes_is_dlibs_add_prev() -> None:
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 2.0)
    out = _face_net._add_padded(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert out[0, :2, :3, :3].eq(3).all() and out[0, 2:].eq(2).all() and out[0, :, 3].eq(2).all()


# ---------------------------------------------------------------------------------- the chips


def _similar_faces(n: int, seed: int = 0) -> np.ndarray:
    """(n, 15, 2) FKD-layout keypoints: one face shape under random similarities."""
    rng = np.random.default_rng(seed)
    base = np.full((15, 2), np.nan)
    base[0], base[1], base[10], base[14] = (66, 37), (30, 37), (48, 56), (48, 77)
    out = []
    for _ in range(n):
        angle, scale = rng.uniform(-0.2, 0.2), rng.uniform(0.85, 1.15)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        out.append((base - 48) @ rot.T + 48 + rng.uniform(-3, 3, 2))
    return np.array(out, np.float32)


def test_chip_transforms_put_the_eyes_where_dlibs_chip_has_them() -> None:
    keypoints = _similar_faces(12)
    eyes_only = identity.Anchors(left_eye=(0,), right_eye=(1,))
    transforms = _chips.chip_transforms(keypoints, eyes_only)
    chip_eyes = np.c_[_chips.chip_template()[:2], np.ones(2)]  # (2, 3)
    mapped = np.einsum("nij,aj->nai", transforms, chip_eyes)
    np.testing.assert_allclose(mapped, keypoints[:, :2], atol=1e-3)


def test_a_chip_samples_the_face_at_its_eye() -> None:
    keypoints = _similar_faces(3)
    images = np.zeros((3, 96, 96), np.uint8)
    for img, kp in zip(images, keypoints, strict=True):
        x, y = np.round(kp[0]).astype(int)
        img[y - 1 : y + 2, x - 1 : x + 2] = 255  # a bright left eye
    transforms = _chips.chip_transforms(keypoints, identity.FKD15_ANCHORS)
    chips = _chips.face_chips(images, transforms)
    assert chips.shape == (3, 3, 150, 150)
    left_eye = _chips.chip_template()[0]
    for chip in chips[:, 0].numpy():
        row, col = np.unravel_index(np.argmax(chip), chip.shape)
        assert np.hypot(col - left_eye[0], row - left_eye[1]) < 6


# ------------------------------------------------------------------------ the embedder choice


def test_embedder_choice(random_weights: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = random_weights
    settings = identity.IdentitySettings
    monkeypatch.setenv(_face_weights.WEIGHTS_ENV, str(path))
    assert identity.embedder_for(settings(), identity.FKD15_ANCHORS) == "face-net"
    assert identity.embedder_for(settings(), None) == "hand-made"  # no eyes named
    assert identity.embedder_for(settings(embedder="hand-made"), identity.FKD15_ANCHORS) == (
        "hand-made"
    )
    with pytest.raises(DataError, match="needs the competition's eyes"):
        identity.embedder_for(settings(embedder="face-net"), None)
    with pytest.raises(DataError, match="unknown"):
        identity.embedder_for(settings(embedder="dlib"), None)
    missing = path.parent / "nowhere.dat"
    monkeypatch.setenv(_face_weights.WEIGHTS_ENV, str(missing))
    with pytest.raises(DataError, match="no face-net weights file") as err:
        identity.embedder_for(settings(), identity.FKD15_ANCHORS)
    assert str(err.value).startswith(str(missing))


def test_without_the_weights_auto_is_hand_made(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = identity.IdentitySettings
    for off in (True, False):
        if off:
            monkeypatch.setenv(_face_weights.WEIGHTS_ENV, "off")
        else:  # not installed
            monkeypatch.delenv(_face_weights.WEIGHTS_ENV, raising=False)
            monkeypatch.setattr(_face_weights.importlib.util, "find_spec", lambda name: None)
        assert identity.embedder_for(settings(), identity.FKD15_ANCHORS) == "hand-made"
        with pytest.raises(DataError, match="not installed"):
            identity.embedder_for(settings(embedder="face-net"), identity.FKD15_ANCHORS)


def test_auto_sets_the_net_aside_when_it_sees_one_person_everywhere(
    random_weights: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = random_weights
    monkeypatch.setenv(_face_weights.WEIGHTS_ENV, str(path))
    monkeypatch.setattr(identity, "ward_groups", lambda *a: np.zeros(8, np.int64))
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (8, 96, 96)).astype(np.uint8)
    keypoints = _similar_faces(8)
    auto = identity.group_identities(images, keypoints, identity.FKD15_ANCHORS)
    assert auto.embedder == "hand-made" and "one person in 8 of 8" in auto.declined
    forced = identity.IdentitySettings(embedder="face-net")
    asked = identity.group_identities(images, keypoints, identity.FKD15_ANCHORS, forced)
    assert asked.embedder == "face-net" and (asked.labels == 0).all()


def test_identity_groups_run_the_face_net_end_to_end(
    random_weights: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = random_weights
    monkeypatch.setenv(_face_weights.WEIGHTS_ENV, str(path))
    _face_net.load_face_net.cache_clear()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 96, 96)).astype(np.uint8)
    images[3:] = images[:3]  # rows 3-5 repeat rows 0-2: identical descriptors
    keypoints = np.concatenate([_similar_faces(3)] * 2)
    labels = identity.identity_groups(images, keypoints, identity.FKD15_ANCHORS)
    assert labels.shape == (6,) and labels.min() == 0
    assert (labels[:3] == labels[3:]).all()
    descriptors = identity.face_net_embeddings(images, keypoints, identity.FKD15_ANCHORS)
    assert descriptors.shape == (6, 128)
    np.testing.assert_allclose(descriptors[:3], descriptors[3:], rtol=1e-5, atol=1e-3)
    assert identity.ward_groups(descriptors, 1.0).max() == 2  # only the copies merge


def test_near_identical_frames_count_once_so_more_frames_do_not_split_a_person() -> None:
    rng = np.random.default_rng(0)
    videos = np.array([[0.0, 0.0], [0.5, 0.0], [5.0, 5.0], [5.5, 5.0]])  # two people, 2 videos
    person = np.array([0, 0, 1, 1])
    for frames in (1, 9):
        rows = np.repeat(videos, frames, axis=0) + rng.normal(0, 1e-3, (4 * frames, 2))
        who = np.repeat(person, frames)
        collapsed = identity.ward_groups(rows, cut=0.75, collapse=0.1)
        np.testing.assert_array_equal(collapsed, who)
        plain = identity.ward_groups(rows, cut=0.75)
        assert (plain.max() + 1) == (2 if frames == 1 else 4)  # Ward's cost grows with frames


def test_folds_made_without_the_face_net_say_so_once_it_is_installed() -> None:
    from kit.data.folds import FOLDS_VERSION, outdated_reason

    def stored(used: str | None) -> dict:
        made = {"embedder_used": used} if used else {}
        return {"version": FOLDS_VERSION, "group_by": "identity", "identity": made}

    assert "kit folds --force" in (outdated_reason(stored("hand-made"), "face-net") or "")
    assert "kit folds --force" in (outdated_reason(stored(None), "face-net") or "")
    assert outdated_reason(stored("hand-made"), "hand-made") is None
    assert outdated_reason(stored("face-net"), "face-net") is None
    declined = stored("hand-made")
    declined["identity"]["face_net_declined"] = "the face net saw one person in 8 of 8 faces"
    assert outdated_reason(declined, "face-net") is None  # tried on these rows, set aside


# ------------------------------------------------------------- the real weights (kit[faces])

REAL = _face_weights.installed_weights()
needs_weights = pytest.mark.skipif(
    REAL is None, reason="kit[faces] (the face net's weights) not installed"
)


@needs_weights
@pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="dlib not installed")
def test_torch_reproduces_dlibs_descriptors() -> None:
    import dlib

    assert REAL is not None
    rec = dlib.face_recognition_model_v1(str(REAL))
    chips = np.random.default_rng(0).integers(0, 256, (3, 150, 150, 3)).astype(np.uint8)
    ref = np.array([np.array(rec.compute_face_descriptor(c)) for c in chips])
    ours = _face_net.describe_chips(
        torch.from_numpy(chips).permute(0, 3, 1, 2).float(), _face_net.load_face_net(REAL)
    )
    np.testing.assert_allclose(ours, ref, atol=1e-4)


@needs_weights
@pytest.mark.skipif(not (SHARED / "imm-58-proxy").is_dir(), reason="../shared/data absent")
def test_imm_people_are_recovered_with_names_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_face_weights.WEIGHTS_ENV, str(REAL))
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from identity_calibration import fkd_keypoints, load_imm

    images, points, person = load_imm(SHARED / "imm-58-proxy" / "imm_face_db", seed=1)
    labels = identity.identity_groups(images, fkd_keypoints(points), identity.FKD15_ANCHORS)
    scores = identity.pair_precision_recall(labels, person)
    assert scores.precision >= 0.9 and scores.recall >= 0.8
