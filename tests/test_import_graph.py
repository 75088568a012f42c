"""No circles and no import back up the floors.

gclib's modules are parsed with ``ast`` (nothing is imported); every ``import`` / ``from ... import`` counts, at
module level or inside a function. A module may import modules of its own layer or of a lower one, and the
graph of imports has no cycle. The layers, lowest first, are declared once, in ``LAYERS``: a new module must be
placed in one (the test says which module is missing). ``gclib/__init__.py`` (the package's face, importing
the core names for users) is left out: importing ``gclib.x`` loads it whatever the layers say. No module is over
``MAX_LINES`` lines (a longer one is split along its seams, its names re-exported where they were).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gclib"

# Lowest first. An entry ending in ".*" holds every module of that subpackage.
LAYERS = {
    "base": ["checks", "io", "rng", "device", "nets", "report", "yamlconf", "plugins", "progress", "signals", "staging", "machine"],
    "core": ["schedules", "precond", "ema", "sampling", "couplings", "losses", "exact", "coupling_paths", "optim",
             "imagesets", "data", "images", "checkpoint", "rundir", "runlog", "objectives", "step", "prefetch"],
    "metrics": ["metrics", "metrics.*", "evaluation"],
    "training": ["config_checks", "config_schema", "config", "models", "distributed", "train_state", "train_resume",
                 "train", "stack", "executors"],
    "experiments": ["experiments", "experiments.*", "claims"],
    "cli": ["reproduce", "compare", "cli_errors", "cli_train", "cli_sample", "cli", "__main__"],
}
FACE = "gclib"
MAX_LINES = 500   # issue 32, item 6: rooms that say what they hold


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(name: str, tree: ast.AST, is_package: bool, known) -> set:
    """The modules of ``known`` that ``tree`` (module ``name``) imports, at any depth of the code."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
            # `from . import x` imports the submodule x; `from .m import f` imports m
            targets = subs if subs else [mod]
        else:
            continue
        for t in targets:
            while t and t not in known:      # `import gclib.metrics.fid.x`: the longest known prefix
                t = t.rpartition(".")[0]
            if t:
                out.add(t)
    out.discard(name)
    return out


def import_graph(root: Path = PACKAGE) -> dict:
    """{module: set of gclib modules it imports} for every .py file under ``root``."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {m: imports_of(m, ast.parse(p.read_text(encoding="utf-8"), str(p)), p.name == "__init__.py", files)
            for m, p in files.items()}


def layer_of(module: str, layers=LAYERS, package: str = "gclib") -> int | None:
    short = module[len(package) + 1:] if module.startswith(package + ".") else module
    for i, (_, names) in enumerate(layers.items()):
        for n in names:
            if short == n or (n.endswith(".*") and short.startswith(n[:-1])):
                return i
    return None


def find_cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (or a module importing itself), sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def upward_imports(graph: dict, layers=LAYERS, face: str = FACE) -> list:
    """(importer, imported, importer's layer, imported's layer) for every import of a higher layer."""
    names = list(layers)
    bad = []
    for a, deps in sorted(graph.items()):
        if a == face:
            continue
        for b in sorted(deps):
            if b == face:
                continue
            la, lb = layer_of(a, layers, face), layer_of(b, layers, face)
            if la is not None and lb is not None and lb > la:
                bad.append((a, b, names[la], names[lb]))
    return bad


def unplaced(graph: dict, layers=LAYERS, face: str = FACE) -> list:
    return sorted(m for m in graph if m != face and layer_of(m, layers, face) is None)


def long_modules(root: Path = PACKAGE, limit: int = MAX_LINES) -> list:
    """(module, number of lines) of every .py file under ``root`` longer than ``limit`` lines, longest first."""
    sizes = [(module_name(p, root), len(p.read_text(encoding="utf-8").splitlines())) for p in sorted(root.rglob("*.py"))]
    return sorted(((m, n) for m, n in sizes if n > limit), key=lambda mn: (-mn[1], mn[0]))


# ------------------------------------------------------------------------------------------------------ the tests
def test_the_graph_is_read():
    g = import_graph()
    assert len(g) > 30 and "gclib.experiments.fid_curves" in g["gclib.reproduce"]
    assert "gclib.train" in g["gclib.experiments.common"]          # a function-level import counts
    assert "gclib.metrics.fid" in g["gclib.metrics.inception"]     # a relative `from .fid import ...`


def test_every_module_has_a_layer():
    missing = unplaced(import_graph())
    assert not missing, f"modules without a layer (add each to LAYERS in {__file__}): {', '.join(missing)}"


def test_no_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_from_a_higher_layer():
    bad = upward_imports(import_graph())
    assert not bad, "imports back up the layers: " + "; ".join(f"{a} ({la}) imports {b} ({lb})"
                                                               for a, b, la, lb in bad)


def test_no_module_is_over_the_line_limit():
    long = long_modules()
    assert not long, (f"modules over {MAX_LINES} lines (split each along its seams): "
                      + ", ".join(f"{m} ({n} lines)" for m, n in long))


def test_the_line_limit_names_a_module_made_too_long(tmp_path):
    """A copy of gclib's modules with one of them made too long fails, naming it; the copy as it is passes."""
    root = tmp_path / "gclib"
    for p in PACKAGE.rglob("*.py"):
        (root / p.relative_to(PACKAGE)).parent.mkdir(parents=True, exist_ok=True)
        (root / p.relative_to(PACKAGE)).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    assert long_modules(root) == []
    train = root / "train.py"
    n = len(train.read_text(encoding="utf-8").splitlines())
    train.write_text(train.read_text(encoding="utf-8") + "\n" * (MAX_LINES - n), encoding="utf-8")
    assert long_modules(root) == []                       # exactly at the limit: allowed
    train.write_text(train.read_text(encoding="utf-8") + "# one line too many\n", encoding="utf-8")
    assert long_modules(root) == [("gclib.train", MAX_LINES + 1)]
    (root / "experiments" / "fid_curves.py").write_text("x = 1\n" * 900, encoding="utf-8")
    assert long_modules(root) == [("gclib.experiments.fid_curves", 900), ("gclib.train", MAX_LINES + 1)]
    assert [m for m, _ in long_modules(root, limit=400)][:2] == ["gclib.experiments.fid_curves", "gclib.train"]


def test_the_checks_catch_a_cycle_and_an_upward_import():
    layers = {"low": ["a", "b"], "high": ["c"]}
    cyclic = {"p.a": {"p.b"}, "p.b": {"p.a"}, "p.c": {"p.a"}}
    assert find_cycles(cyclic) == [["p.a", "p.b"]]
    assert find_cycles({"p.a": {"p.a"}}) == [["p.a"]]
    upward = {"p.a": {"p.c"}, "p.b": set(), "p.c": {"p.b"}}
    assert find_cycles(upward) == []
    assert [(a, b) for a, b, *_ in upward_imports(upward, layers, face="p")] == [("p.a", "p.c")]
    assert layer_of("p.c", layers, "p") == 1 and layer_of("p.x", layers, "p") is None
    assert unplaced({"p.x": set(), "p.a": set()}, layers, face="p") == ["p.x"]


def test_the_parser_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "q"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from .sub import mod\n")
    (pkg / "sub" / "mod.py").write_text("from .. import low\nimport q.high\n")
    (pkg / "high.py").write_text("from .sub.mod import x\n")
    g = import_graph(pkg)
    assert g["q.low"] == {"q.sub.mod"} and g["q.sub.mod"] == {"q.low", "q.high"} and g["q.high"] == {"q.sub.mod"}
    assert find_cycles(g) == [["q.high", "q.low", "q.sub.mod"]]
    layers = {"low": ["low"], "mid": ["sub", "sub.*"], "high": ["high"]}
    assert [(a, b) for a, b, *_ in upward_imports(g, layers, face="q")] == [("q.low", "q.sub.mod"),
                                                                             ("q.sub.mod", "q.high")]
