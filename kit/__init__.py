"""kit: a Kaggle competition kit for facial keypoint competitions.

Data flow: fetch -> dataset (cache) -> folds -> train -> OOF -> stack -> submit -> track.
Every stage reads and writes known files under the competition's work folder (see kit.workspace).
"""

import os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting make 2-thread CPU training several times slower when
# anything else uses the cores; set before torch loads (an explicit user setting wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
