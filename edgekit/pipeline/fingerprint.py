"""What a stage's cache key must cover besides its spec: the code that runs it and the tools it calls.

A stage's code is the transitive closure of the edgekit modules its body imports (module-level and
inside functions, read from the source, not from ``sys.modules``), starting from its function in
``stages.py``; the fingerprint hashes those files' bytes (of stages.py, only the stage's own
functions). Editing a module only the export stage runs (``export/onnx.py``) changes the export key,
so export and every stage after it rerun, but not the distill key. Granularity is the module: a lazy
import anywhere in a module counts, which is coarse but never misses code the stage can run. Stages not
in ``STAGE_FUNCTIONS`` (tests, ad-hoc runners) are keyed on the whole package, which is always
safe, only coarser. Tool versions come from installed distributions' metadata (nothing imported).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata as metadata
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # .../edgekit
STAGES_MODULE = "edgekit.pipeline.stages"

# Stage name -> its body in stages.py.
STAGE_FUNCTIONS = {
    "distill": "run_distill",
    "prune": "run_prune",
    "recover": "run_recover",
    "export": "run_export",
    "verify": "run_verify",
    "bench": "run_bench",
}

# Stage name -> distributions whose version changes what it produces (one line each: why).
STAGE_TOOLS = {
    "distill": ("torch", "transformers", "tokenizers"),  # training numerics, model code, token ids
    "prune": ("torch", "transformers", "tokenizers"),
    "recover": ("torch", "transformers", "tokenizers"),
    "export": (  # converters and quantizers
        "torch",
        "transformers",
        "tokenizers",
        "gguf",
        "llama-cpp-python",  # bundles the llama.cpp quantizer
        "onnx",
        "onnxruntime",
        "onnxruntime-genai",
        "optimum-onnx",
    ),
    "verify": ("torch", "transformers", "tokenizers", "llama-cpp-python", "onnxruntime", "onnxruntime-genai"),
    "bench": ("llama-cpp-python", "onnxruntime", "onnxruntime-genai", "torch", "transformers"),
}


def _module_file(module: str) -> Path | None:
    """The source file of an edgekit module name (package -> its __init__.py), or None."""
    parts = module.split(".")[1:]
    base = PACKAGE_ROOT.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _source(path: Path) -> bytes:
    return path.read_bytes()


def _imported(tree: ast.AST, module: str) -> set[str]:
    """edgekit modules named by the imports in ``tree`` (absolute and relative)."""
    package = (
        module if _module_file(module) and _module_file(module).name == "__init__.py" else module.rsplit(".", 1)[0]
    )
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "edgekit"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            if name.split(".")[0] != "edgekit":
                continue
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}  # `from edgekit.prune import plan` names a module
    return {m for m in found if _module_file(m) is not None}


@functools.lru_cache(maxsize=512)
def _imports_of(module: str) -> frozenset[str]:
    return frozenset(_imported(ast.parse(_source(_module_file(module))), module))


def _parents(module: str) -> set[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py too."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def closure(roots: set[str]) -> set[str]:
    """Every edgekit module reachable from ``roots`` through imports.

    Parent packages' ``__init__.py`` files are hashed but not followed: they re-export (e.g.
    ``edgekit.pipeline`` imports the whole build), and following them would make every stage's code
    the whole package. ``stages.py`` itself is not followed either: each stage counts only its own body.
    """
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen or _module_file(module) is None:
            continue
        seen.add(module)
        if module in (STAGES_MODULE, "edgekit"):  # the root package is the public facade (edgekit.load)
            continue
        todo += _imports_of(module)
    return seen | {p for m in seen for p in _parents(m) if _module_file(p) is not None}


def _stage_functions(tree: ast.Module, name: str) -> list[ast.FunctionDef]:
    """The stage's function and the helpers in stages.py it calls (``load_corpus``, ...), transitively."""
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    found, todo = {}, [name]
    while todo:
        fn = defs.get(todo.pop())
        if fn is None or fn.name in found:
            continue
        found[fn.name] = fn
        todo += [n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id in defs]
    return list(found.values())


def stage_modules(stage: str) -> set[str]:
    """The edgekit modules a stage's body can run: its function, what it imports, and so on."""
    tree = ast.parse(_source(_module_file(STAGES_MODULE)))
    imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    roots = _imported(ast.Module(body=imports, type_ignores=[]), STAGES_MODULE)
    for function in _stage_functions(tree, STAGE_FUNCTIONS[stage]):  # not the other stages' bodies
        roots |= _imported(function, STAGES_MODULE)
    return closure(roots - {STAGES_MODULE}) | {STAGES_MODULE}


def _all_modules() -> set[str]:
    return {
        "edgekit." + ".".join(p.relative_to(PACKAGE_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in PACKAGE_ROOT.rglob("*.py")
    }


def code_files(stage: str) -> dict[str, str]:
    """{file relative to the package: sha256 of its bytes} for the code a stage runs."""
    modules = stage_modules(stage) if stage in STAGE_FUNCTIONS else _all_modules()
    files = {_module_file(m) for m in modules} - {None}
    hashes = {
        p.relative_to(PACKAGE_ROOT.parent).as_posix(): hashlib.sha256(_source(p)).hexdigest()[:16]
        for p in sorted(files)
    }
    if stage in STAGE_FUNCTIONS:  # of stages.py, only this stage's own functions and the imports count
        stages_file = _module_file(STAGES_MODULE)
        text = _source(stages_file).decode()
        tree = ast.parse(text)
        parts = [ast.get_source_segment(text, n) or "" for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        parts += [ast.get_source_segment(text, f) or "" for f in _stage_functions(tree, STAGE_FUNCTIONS[stage])]
        key = stages_file.relative_to(PACKAGE_ROOT.parent).as_posix() + f"::{STAGE_FUNCTIONS[stage]}"
        hashes.pop(stages_file.relative_to(PACKAGE_ROOT.parent).as_posix(), None)
        hashes[key] = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return hashes


def tool_versions(stage: str) -> dict[str, str | None]:
    """{distribution: installed version or None} for the tools a stage calls."""
    names = STAGE_TOOLS.get(stage, tuple(sorted({d for tools in STAGE_TOOLS.values() for d in tools})))
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=64)
def _cached(stage: str) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str | None], ...]]:
    return tuple(code_files(stage).items()), tuple(tool_versions(stage).items())


def stage_fingerprint(stage: str) -> dict[str, dict]:
    """{"code": {file: hash}, "tools": {dist: version}} for a stage, computed once per process."""
    code, tools = _cached(stage)
    return {"code": dict(code), "tools": dict(tools)}


def clear_cache() -> None:
    """Forget computed fingerprints (after source files changed in this process)."""
    _cached.cache_clear()
    _imports_of.cache_clear()
