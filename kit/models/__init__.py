"""Model families behind a timm-style registry; importing kit.models registers them all.

    from kit.models import create_model, list_models
    model = create_model("resnet", num_keypoints=15, input_size=96, depth=34)
    keypoints = model.predict_keypoints(images)  # (B, K, 2) input pixels

A new family is one module here, decorated with `register_model` and imported below.
"""

from kit.models import convbn, heatmap, lenet, resnet, sixconv, sp  # noqa: F401  (registers them)
from kit.models.codec import HeatmapCodec, KeypointCodec, RegressionCodec
from kit.models.registry import (
    KeypointModel,
    ModelFamily,
    create_model,
    get_family,
    list_models,
    register_model,
)

__all__ = [
    "HeatmapCodec",
    "KeypointCodec",
    "KeypointModel",
    "ModelFamily",
    "RegressionCodec",
    "create_model",
    "get_family",
    "list_models",
    "register_model",
]
