"""The layout's rules, checked on the source: no import circles among kit's modules (imports
inside functions included), the store imports no torch, and no long file without its reason."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, package: str) -> set[str]:
    """Every module name an import anywhere in `tree` may load (`from a import b`: a and a.b)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """kit module -> the kit modules it imports; an import of a module's own package (which
    Python has already begun loading) is not an edge."""
    paths = {module_name(p): p for p in (REPO / "kit").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for target in imported(ast.parse(path.read_text()), package):
            while target and target not in paths:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_among_kits_modules() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("module", ["kit.store", "kit.data.folds"])
def test_readers_import_no_torch(module: str) -> None:
    """The store, and the folds (read by the stack; identity loads its face net only to group)."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_no_long_file_without_its_reason_at_the_top() -> None:
    long = []
    for path in [*(REPO / "kit").rglob("*.py"), *(REPO / "competitions").rglob("*.py")]:
        text = path.read_text()
        if text.count("\n") > MAX_LINES and "on purpose" not in (
            ast.get_docstring(ast.parse(text)) or ""
        ):
            long.append(str(path.relative_to(REPO)))
    assert long == []


def kit_code() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for p in (REPO / "kit").rglob("*.py")}


def test_kit_names_no_competitions_subset() -> None:
    """Competition facts live in competition.toml: FKD's subset name is not spelled in kit/."""
    word = re.compile(r"\beights?\b", re.IGNORECASE)
    assert [path for path, text in kit_code().items() if word.search(text)] == []


def test_no_code_tests_the_metrics_name() -> None:
    """A metric's space, error and direction come from its `Metric` object, not its name."""
    name_test = re.compile(
        r"metric\s*(==|!=|in\s*[(\[{])|[=!]=\s*[\"'](rmse|mae|nme)[\"']|[\"'](rmse|mae)[\"']\s*[=!]="
    )
    found = [
        f"{path}: {line.strip()}"
        for path, text in kit_code().items()
        for line in text.splitlines()
        if name_test.search(line)
    ]
    assert found == []
