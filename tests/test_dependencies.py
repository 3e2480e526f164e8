"""Every distribution edgekit imports is one it declares.

A green CI once hid a missing dependency (click, which typer stopped bringing): the test
environment still had it from earlier installs. This test reads edgekit's own imports, maps each
top-level module to the distribution that provides it (``importlib.metadata.packages_distributions``
for what is installed, the table below for optional packages that may not be), and compares with
``pyproject.toml``'s dependencies. A dependency that only arrives transitively fails here too.

Optional packages (extras) may be imported only lazily (inside a function) and only in the files
named in ``OPTIONAL_IMPORTS``, so that a default install never trips over them.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgekit"

# module -> (distribution that provides it, files allowed to import it lazily); the extra is read from pyproject.
OPTIONAL_IMPORTS: dict[str, tuple[str, frozenset[str]]] = {
    "pynvml": ("nvidia-ml-py", frozenset({"edgekit/bench/memory.py"})),  # gpu extra: per-process GPU memory
    "optimum": ("optimum-onnx", frozenset({"edgekit/export/onnx.py", "edgekit/export/onnx_optimum.py"})),
}
# Import name -> distribution, for declared packages whose import name differs and that may not be
# installed where this runs (the map above only knows installed ones).
PROVIDERS = {
    "llama_cpp": "llama-cpp-python",
    # onnxruntime-genai's model builder imports its exporters as a top-level ``builders`` package from
    # its own folder; edgekit/export/onnx_builder_child.py patches one of them the same way
    "builders": "onnxruntime-genai",
}


def _normalize(name: str) -> str:
    """PEP 503 name: ``Jinja2`` and ``jinja2``, ``tomli_w`` and ``tomli-w`` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    return _normalize(re.split(r"[<>=!~;\[\s(]", spec.strip(), maxsplit=1)[0])


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {_requirement_name(s) for s in project["dependencies"]}
    extras = {name: {_requirement_name(s) for s in specs} for name, specs in project["optional-dependencies"].items()}
    return core, extras


def _imports(root: Path = ROOT) -> list[tuple[str, str, bool]]:
    """(top-level module, file relative to ``root``, imported at module level) for edgekit's absolute imports."""
    found = []
    for path in sorted((root / "edgekit").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        lazy = {
            id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            rel = path.relative_to(root).as_posix()
            found += [(n.split(".")[0], rel, id(node) not in lazy) for n in names]
    return found


def _third_party(module: str) -> bool:
    return module != "edgekit" and module not in sys.stdlib_module_names


def _problems(imports: list[tuple[str, str, bool]]) -> list[str]:
    core, extras = _declared()
    optional = set().union(*extras.values())
    installed = metadata.packages_distributions()
    problems = []
    for module, where, eager in imports:
        if not _third_party(module):
            continue
        if module in OPTIONAL_IMPORTS:
            dist, allowed = OPTIONAL_IMPORTS[module]
            if _normalize(dist) in core:
                continue
            if _normalize(dist) not in optional:
                problems.append(f"{where}: imports {module} ({dist}), declared in no extra")
            if where not in allowed or eager:
                problems.append(f"{where}: optional {module} must be imported inside a function in {sorted(allowed)}")
            continue
        dists = {_normalize(d) for d in installed.get(module, [])}
        if not dists and _normalize(PROVIDERS.get(module, module)) in core:
            continue  # declared, just not installed here (e.g. a native wheel still building)
        if not dists:
            problems.append(f"{where}: imports {module}, which no installed distribution provides")
        elif not dists & core:
            problems.append(f"{where}: imports {module} from {sorted(dists)}, not in pyproject's dependencies")
    return sorted(set(problems))


def test_every_imported_distribution_is_declared() -> None:
    problems = _problems(_imports())
    assert not problems, "\n".join(problems)


def test_the_check_catches_undeclared_and_eager_optional_imports(tmp_path) -> None:
    """An undeclared package imported lazily (as click was), an eager optional one, and one nobody provides."""
    package = tmp_path / "edgekit"
    package.mkdir()
    (package / "cli.py").write_text("def f():\n    import click\n    import rich\n", encoding="utf-8")
    (package / "gpu.py").write_text("import pynvml\nimport not_a_module_anywhere\n", encoding="utf-8")
    problems = "\n".join(_problems(_imports(tmp_path)))
    assert "edgekit/cli.py: imports click" in problems
    assert "rich" not in problems  # declared
    assert "edgekit/gpu.py: optional pynvml must be imported inside a function" in problems
    assert "edgekit/gpu.py: imports not_a_module_anywhere, which no installed distribution provides" in problems


def test_the_cli_error_path_needs_only_typer() -> None:
    """click is not a dependency: nothing in the package may import it, even lazily."""
    assert not [where for module, where, _ in _imports() if module == "click"]


def test_installed_metadata_matches_pyproject() -> None:
    """When edgekit is installed from this tree, its Requires-Dist is pyproject's list (no stale install)."""
    try:
        dist = metadata.distribution("edgekit")
    except metadata.PackageNotFoundError:
        return  # run from the source tree (PYTHONPATH): pyproject itself was checked above
    origin = Path(str(dist.locate_file("edgekit"))).resolve()
    if origin != PACKAGE.resolve():
        return  # metadata of another checkout: says nothing about this tree
    core, _ = _declared()
    required = {_requirement_name(r) for r in dist.requires or [] if "extra ==" not in r}
    assert required == core
