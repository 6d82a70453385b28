"""`kit report COMP`: one self-contained HTML page of a competition's work folder, the way
`kit track report` is one of the leaderboard: the runs and the stack (CV per model and per
keypoint, stack weights, the meta-model picked per keypoint), learning curves, the worst
out-of-fold faces, the tuning history, the last `kit run`'s plan against what happened, and the
submissions with CV beside their public scores.

records.py reads the work folder into typed records; pictures.py draws (or takes from disk)
the PNGs; trained.py (runs, keypoints, stack) and history.py (curves, faces, tuning, plan,
submissions) render the sections with html.py's parts; page.py lays out the page; build.py
writes it.
"""

from __future__ import annotations

from kit.report.build import REPORT_FILE, build_report

__all__ = ["REPORT_FILE", "build_report"]
