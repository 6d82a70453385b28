"""`build_report`: read the work folder, render the page, write it atomically."""

from __future__ import annotations

from pathlib import Path

from kit.competition import Competition
from kit.report.page import render_page
from kit.report.pictures import Faces
from kit.report.records import read_work_folder
from kit.workspace import check_output_file, write_text

REPORT_FILE = "report.html"


def build_report(comp: Competition, out: Path | None = None) -> Path:
    """Write one self-contained HTML page about what was trained for `comp` (default
    work/COMP/report.html); returns its path. Nothing to report is a KitError."""
    if out is not None:
        check_output_file(out, "--out")  # before the work: not after it
    folder = read_work_folder(comp)
    faces = Faces(comp.workspace.train_npz)  # draws the worst faces not on disk
    path = out or comp.workspace.root / REPORT_FILE
    write_text(path, render_page(folder, faces))
    return path
