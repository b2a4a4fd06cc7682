"""The layout of DESIGN.md holds: packages in layers, dependencies one way, no import circles.

import-linter reads packages from disk by their dotted names, and in this repository the
packages sit at the root (`models/` is `nanolens.models` only once installed, by setuptools'
`package-dir`). So each check runs on the installed layout, built in a temporary folder from
pyproject.toml's own `package-dir` table.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def installed_layout(dest: Path) -> Path:
    """`dest/nanolens/...` as pip installs it: every `package-dir` entry copied to its dotted path."""
    package_dir = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    for package, source in package_dir.items():
        shutil.copytree(ROOT / source, dest.joinpath(*package.split(".")), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), str(PYPROJECT), "--no-cache"], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return installed_layout(tmp_path_factory.mktemp("layout"))


def test_the_layers_contract_is_kept(tree):
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_the_contract_reports_a_wrong_way_import(tmp_path):
    """The check can fail: a model module that imports steering breaks the contract."""
    tree = installed_layout(tmp_path)
    (tree / "nanolens" / "models" / "wrong_way.py").write_text("from nanolens.steering import steer\n", encoding="utf-8")
    result = lint(tree)
    assert result.returncode != 0
    assert "nanolens.models.wrong_way -> nanolens.steering" in result.stdout


def test_there_are_no_import_circles(tree):
    """No module reaches itself through imports, inside a package or between packages
    (imports under `TYPE_CHECKING` are only for type checkers and do not count)."""
    code = textwrap.dedent("""
        import grimp
        graph = grimp.build_graph("nanolens", exclude_type_checking_imports=True)
        edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
        index, low, stack, on, circles = {}, {}, [], set(), []
        def visit(v):  # Tarjan's strongly connected components, iteratively
            work = [(v, iter(sorted(edges[v])))]
            index[v] = low[v] = len(index); stack.append(v); on.add(v)
            while work:
                node, children = work[-1]
                for w in children:
                    if w not in index:
                        index[w] = low[w] = len(index); stack.append(w); on.add(w)
                        work.append((w, iter(sorted(edges[w])))); break
                    if w in on:
                        low[node] = min(low[node], index[w])
                else:
                    work.pop()
                    if work:
                        low[work[-1][0]] = min(low[work[-1][0]], low[node])
                    if low[node] == index[node]:
                        part = []
                        while True:
                            w = stack.pop(); on.discard(w); part.append(w)
                            if w == node:
                                break
                        if len(part) > 1:
                            circles.append(sorted(part))
        for m in sorted(graph.modules):
            if m not in index:
                visit(m)
        print(circles)
    """)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"import circles: {result.stdout}"
