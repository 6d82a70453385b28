"""input_scale: a family built for a larger input than the competition's, in its pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kit.data.arrays import KeypointData
from kit.errors import KitError
from kit.models import RegressionCodec, create_model
from kit.models.scaled_input import ScaledCodec
from kit.training.checkpoint import load_fold_model
from kit.training.config import resolve_config
from kit.training.predict import predict_rows
from kit.training.runs import train_run
from tests.test_train import write_tiny_competition


def test_pixel_centres_map_onto_pixel_centres() -> None:
    """A regression codec's normalised targets do not depend on the pixel grid, so a codec at
    twice the size seen from the competition's pixels encodes and decodes exactly as the
    competition's own codec."""
    keypoints = torch.tensor([[[0.0, 95.0], [47.5, 12.25]]])
    own = RegressionCodec(2, 96)
    scaled = ScaledCodec(RegressionCodec(2, 192), 96)
    own.set_prior(keypoints[0])
    scaled.set_prior(keypoints[0])
    (t_own, m_own), (t_scaled, m_scaled) = own.encode(keypoints), scaled.encode(keypoints)
    torch.testing.assert_close(t_scaled, t_own)
    assert torch.equal(m_scaled, m_own)
    output = torch.randn(1, 4)
    torch.testing.assert_close(scaled.decode(output), own.decode(output))
    torch.testing.assert_close(scaled.decode(t_scaled.reshape(1, 4)), keypoints)


@pytest.mark.parametrize("family", ["heatmap", "resnet"])
def test_a_scaled_model_takes_the_competitions_images_and_upsamples_them(family: str) -> None:
    model = create_model(family, 5, 32, input_scale=2.0)
    assert model.codec.input_size == 32 and model.codec.inner.input_size == 64
    assert model.hparams["input_scale"] == 2.0
    assert model.predict_keypoints(torch.rand(3, 1, 32, 32)).shape == (3, 5, 2)
    with pytest.raises(KitError, match=r"\(B, 1, 32, 32\)"):
        model(torch.rand(3, 1, 64, 64))
    if family == "heatmap":  # its maps are those of a 64 px input
        assert model(torch.rand(1, 1, 32, 32)).shape == (1, 5, 16, 16)


def test_an_input_scale_out_of_range_is_named() -> None:
    with pytest.raises(KitError, match=r"input_scale 8\.0 is out of range"):
        create_model("lenet", 5, 32, input_scale=8.0)
    with pytest.raises(KitError, match=r"input_scale 0\.5 is out of range"):
        resolve_config("lenet", {"input_scale": 0.5})  # refused before a run starts


def test_runs_recorded_before_input_scale_keep_their_ids() -> None:
    plain = resolve_config("resnet", {})
    assert plain.model["input_scale"] == 1.0 and "input_scale" not in plain.identity()["model"]
    assert resolve_config("resnet", {"input_scale": 1}).identity() == plain.identity()
    assert resolve_config("resnet", {"input_scale": 2}).identity() != plain.identity()


def test_a_scaled_run_trains_and_its_checkpoints_predict_what_it_stored() -> None:
    comp = write_tiny_competition()
    overrides = {"input_scale": 1.5, "batch_size": 16, "width": 8}
    result = train_run(comp, "resnet", overrides, epochs=1, pictures=False, device="cpu")
    assert result.oof.shape == (48, 15, 2) and np.isfinite(result.oof).all()
    model = load_fold_model(result.path, 0)
    assert model.codec.inner.input_size == 48
    images = torch.from_numpy(KeypointData.load(comp.workspace.train_npz).images).unsqueeze(1)
    rows = np.flatnonzero(np.arange(48) % 3 == 0)  # fold 0's rows
    cpu = torch.device("cpu")
    predicted = predict_rows(model, images, rows, cpu, flip_perm=comp.flip_permutation())
    np.testing.assert_allclose(result.oof[rows], predicted, atol=1e-4)
