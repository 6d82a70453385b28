"""`kit predict`: trained models on your own photos.

A photo goes through the competition's plug-in (kit.competition.PhotoPlugin): where the network
sees a face crop, a face box (``--box``, else the largest face OpenCV's Haar detector finds,
kit.predict.detect) becomes the crop the training images were cut as; otherwise the whole photo
is the input. The crops then go through a finished run (each fold's model with flip TTA,
averaged over the folds) or a stack (its base runs, then the meta-models `kit stack` saved;
an older stack's fitted again once and saved), exactly as they predicted their own test split
(kit.predict.models),
and the keypoints are mapped back to the photo's pixels through the crop's affine.

Modules: detect (face boxes; cv2 lives there only), photos (reading, boxes, framing), models
(predicting any images with a run or stack), output (the CSV, the pictures), make
(`predict_photos`, the entry point).
"""

from kit.predict.detect import FaceDetector, HaarDetector
from kit.predict.make import PhotoPrediction, PredictResult, predict_photos
from kit.predict.models import predict_images
from kit.predict.photos import Failed, Framed, parse_box

__all__ = [
    "FaceDetector",
    "Failed",
    "Framed",
    "HaarDetector",
    "PhotoPrediction",
    "PredictResult",
    "parse_box",
    "predict_images",
    "predict_photos",
]
