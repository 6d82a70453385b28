"""kit asks for torch >= 2.3 (pyproject.toml), so it may not use torch API that came later.

The whole suite ran on torch 2.3.1 once (docs/benchmarks.md, "torch 2.3"); this test keeps the
code from drifting past that floor with the calls known to be newer, and fails if the floor in
pyproject.toml moves without this list being revisited.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOOR = "torch>=2.3"
# API newer than torch 2.3, with the release that brought it.
NEWER_THAN_FLOOR = {
    r"torch\.OutOfMemoryError": "2.5 (use torch.cuda.OutOfMemoryError)",
    r"torch\.accelerator\b": "2.6",
    r"torch\.compiler\.set_stance": "2.6",
    r"torch\.serialization\.add_safe_globals": "2.4",
    r"torch\.nn\.attention\.flex_attention": "2.5",
    r"torch\.export\.export_for_training": "2.5",
    r"torch\.amp\.autocast\(\s*[\"']mps": "2.5 (MPS autocast)",
    r"torch\.autocast\(\s*[\"']mps": "2.5 (MPS autocast)",
}


def code_files() -> list[Path]:
    folders = ("kit", "benchmarks", "competitions")
    return [path for folder in folders for path in (REPO / folder).rglob("*.py")]


def test_pyproject_declares_the_floor_this_list_guards() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    torch_requirements = [r for r in project["dependencies"] if r.startswith("torch")]
    assert torch_requirements == [FLOOR]


def test_no_torch_api_newer_than_the_floor() -> None:
    found = []
    for path in code_files():
        text = path.read_text()
        for pattern, since in NEWER_THAN_FLOOR.items():
            for match in re.finditer(pattern, text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(REPO)}:{line}: {match.group(0)} is torch {since}")
    assert not found, "\n".join(found)


def test_every_torch_load_says_weights_only() -> None:
    """torch.load's default flipped to weights_only=True in 2.6: say it, so 2.3 behaves alike."""
    calls, missing = 0, []
    for path in code_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                calls += 1
                if "weights_only" not in {k.arg for k in node.keywords}:
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert calls and not missing, missing
