"""The package's shape: every name has one home, imports go to it, layers point down.

Read from the source with :mod:`ast` (nothing is imported), so a violation names the file
and line:

* a module that is not a package ``__init__`` never re-exports a name it imports
  (``__all__`` lists only what the module defines; no ``import x as x``);
* inside ``meteora/`` every ``from meteora.x import name`` names the module that defines
  ``name``; tests, benchmarks and examples may also use a package's public API (a name
  in that package ``__init__``'s ``__all__``);
* the module-level import graph has no cycle, and no layer imports one above it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "meteora"


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    defined: set[str] = field(default_factory=set)
    imported: dict[str, tuple[str, str]] = field(default_factory=dict)  # local name -> (module, name)
    lazy: dict[str, str] = field(default_factory=dict)  # name -> module (a package's __getattr__ table)
    all_: list[str] | None = None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level(body: list[ast.stmt]):
    """Statements bound at module level (descending into if/try/with blocks)."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            yield from _top_level(node.body)
            for handler in getattr(node, "handlers", []):
                yield from _top_level(handler.body)
            yield from _top_level(getattr(node, "orelse", []))
            yield from _top_level(getattr(node, "finalbody", []))


def _names_listed(value: ast.expr, mod: Module) -> list[str]:
    """The strings of an ``__all__`` list (``*_LAZY`` stands for the lazy table's keys)."""
    out: list[str] = []
    for elt in getattr(value, "elts", []):
        if isinstance(elt, ast.Starred) and isinstance(elt.value, ast.Name) and elt.value.id == "_LAZY":
            out.extend(mod.lazy)
        else:
            out.append(ast.literal_eval(elt))
    return out


def _load() -> dict[str, Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        mod = Module(_module_name(path), path, tree, path.name == "__init__.py")
        for node in _top_level(tree.body):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                mod.defined.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
                mod.defined |= names
                if "__all__" in names and isinstance(node, ast.Assign):
                    mod.all_ = _names_listed(node.value, mod)
                if "_LAZY" in names and isinstance(node, ast.Assign):
                    mod.lazy = {k: v if isinstance(v, str) else v[0] for k, v in ast.literal_eval(node.value).items()}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    mod.imported[alias.asname or alias.name] = (node.module, alias.name)
        modules[mod.name] = mod
    return modules


MODULES = _load()


def _home(module: str, name: str) -> str:
    """The module that defines ``name`` as seen from ``module`` (following imports)."""
    for _ in range(20):
        mod = MODULES.get(module)
        if mod is None or name in mod.defined:
            return module
        if name in mod.imported:
            module, name = mod.imported[name]
            if not module.startswith("meteora"):
                return module
        elif name in mod.lazy:
            module = mod.lazy[name]
        else:
            return module
    return module


def _meteora_imports(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("meteora"):
            for alias in node.names:
                yield node, alias.name


def _is_submodule(module: str, name: str) -> bool:
    return f"{module}.{name}" in MODULES


def test_the_model_of_the_package_is_read():
    assert "meteora.reranker" in MODULES and "Reranker" in MODULES["meteora.reranker"].defined
    assert _home("meteora", "Reranker") == "meteora.reranker"  # through the lazy table


def test_no_module_reexports_a_name_it_imports():
    problems = []
    for mod in MODULES.values():
        if mod.is_package:
            continue
        for name in mod.all_ or []:
            if name not in mod.defined:
                problems.append(f"{mod.path.relative_to(REPO)}: __all__ lists {name!r}, defined elsewhere")
        for node in ast.walk(mod.tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.asname and alias.asname == alias.name.rsplit(".", 1)[-1]:
                        problems.append(f"{mod.path.relative_to(REPO)}:{node.lineno}: `import {alias.name} as {alias.asname}` re-exports")
    assert not problems, "\n".join(problems)


def test_package_inits_export_what_they_import_from_their_own_package():
    problems = []
    for mod in MODULES.values():
        if not mod.is_package:
            continue
        for name in mod.all_ or []:
            home = _home(mod.name, name)
            if not (home == mod.name or home.startswith(mod.name + ".")):
                problems.append(f"{mod.path.relative_to(REPO)}: exports {name!r} of {home}")
    assert not problems, "\n".join(problems)


def _exists(module: str, name: str) -> bool:
    mod = MODULES.get(module)
    return mod is None or name in mod.defined or name in mod.imported or name in mod.lazy


def test_imports_inside_the_package_name_the_defining_module():
    problems = []
    for mod in MODULES.values():
        for node, name in _meteora_imports(mod.tree):
            if _is_submodule(node.module, name):
                continue
            home = _home(node.module, name)
            if not _exists(home, name):
                problems.append(f"{mod.path.relative_to(REPO)}:{node.lineno}: {node.module} has no {name!r}")
            elif home != node.module:
                problems.append(f"{mod.path.relative_to(REPO)}:{node.lineno}: import {name} from {home}, not {node.module}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("folder", ["tests", "benchmarks", "examples"])
def test_tests_benchmarks_and_examples_import_from_the_defining_module_or_the_public_api(folder):
    problems = []
    for path in sorted((REPO / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, name in _meteora_imports(tree):
            if _is_submodule(node.module, name):
                continue
            if not _exists(_home(node.module, name), name):
                problems.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.module} has no {name!r}")
                continue
            if _home(node.module, name) == node.module:
                continue
            package = MODULES.get(node.module)
            if package is not None and package.is_package and name in (package.all_ or []):
                continue  # the package's public API
            problems.append(
                f"{path.relative_to(REPO)}:{node.lineno}: import {name} from {_home(node.module, name)}, not {node.module}"
            )
    assert not problems, "\n".join(problems)


def _module_level_edges() -> dict[str, set[str]]:
    """Imports executed when a module is imported (not inside functions or TYPE_CHECKING)."""
    edges: dict[str, set[str]] = {}
    for mod in MODULES.values():
        out = edges.setdefault(mod.name, set())
        for node in _top_level(mod.tree.body):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("meteora"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("meteora")]
            out |= {t for t in targets if t in MODULES and t != mod.name}
    return edges


def test_no_import_cycle():
    edges = _module_level_edges()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


#: Layers, lowest first: a module may import its own layer and those below, never above
#: (lazy imports inside functions included).
LAYERS: list[set[str]] = [
    # the root package itself (``__version__``, its lazy table of public names)
    {"meteora", "errors", "types", "_checks", "_io", "settings", "console", "models", "model_files", "corpus", "metrics",
     "set_metrics", "protocols", "relevance"},
    {"lm", "embeddings", "inference", "retrievers", "selection", "verdicts", "datasets", "cache", "cache_table",
     "findings", "conflicts"},
    # model_pull exports the default scorer to ONNX
    {"rationales", "scorer", "verifier", "defences", "rerank_result", "model_pull", "pool_stage", "suspicion",
     "pool_defence"},
    {"pipeline", "selection_inputs", "verifier_stage"},
    {"reranker", "reranker_loading", "reranker_async"},
    {"integrations", "evaluation", "bench", "distributed"},
    {"training", "server"},
    {"cli", "cli_options", "cli_eval", "cli_train", "doctor"},
]


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "meteora"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module} belongs to no layer; add {top!r} to LAYERS in {__file__}")


#: Known sideways-up uses, each with its reason.
ALLOWED_UP = {
    # the ``python -m`` entry points of these modules parse the shared CLI options
    ("bench", "cli_options"),
    ("server", "cli_options"),
    # a results file records the same environment block as the benchmark's
    ("training", "bench"),
}


def test_no_upward_import():
    problems = []
    for mod in MODULES.values():
        own = _layer(mod.name)
        for node, _name in _meteora_imports(mod.tree):
            other = _layer(node.module)
            pair = (mod.name.split(".")[1] if "." in mod.name else "meteora", node.module.split(".")[1] if "." in node.module else "meteora")
            if other > own and pair not in ALLOWED_UP:
                problems.append(f"{mod.path.relative_to(REPO)}:{node.lineno}: {mod.name} imports {node.module} (a layer above)")
    assert not problems, "\n".join(problems)


def test_evaluation_never_imports_training():
    for mod in MODULES.values():
        if mod.name.startswith("meteora.evaluation"):
            for node, _ in _meteora_imports(mod.tree):
                assert not node.module.startswith("meteora.training"), f"{mod.path}:{node.lineno}"


#: Where a process starts: the only modules that may set torch's process-wide thread count.
THREAD_SETTERS = {
    "meteora.cli",
    "meteora.training.poison_check",  # its ``python -m`` main
    # a Ray actor's ``__init__`` runs first in its own worker process
    "meteora.distributed.build",
    "meteora.distributed.rerank",
}


def test_thread_settings_are_applied_only_where_a_process_starts():
    problems = []
    for mod in MODULES.values():
        if mod.name == "meteora.settings":
            continue
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                if name in ("apply_thread_setting", "set_num_threads") and mod.name not in THREAD_SETTERS:
                    problems.append(f"{mod.path.relative_to(REPO)}:{node.lineno}: {name}() outside a process entry point")
    assert not problems, "\n".join(problems)
