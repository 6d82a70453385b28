"""kit: a Kaggle competition kit for facial keypoint competitions.

Data flow: fetch -> dataset (cache) -> folds -> train -> OOF -> stack -> submit -> track.
Every stage reads and writes known files under the competition's work folder (see kit.workspace).
"""

__version__ = "0.1.0"
