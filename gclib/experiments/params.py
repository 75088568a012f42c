"""Notebook parameters: one check before any work, for papermill runs, ``make reproduce`` and JupyterLab.

A notebook's first code cell (tagged ``parameters``) declares every parameter with its default; that cell is the
single source of truth. ``check_params(notebook, globals())``, the first call after it:

- rejects a parameter papermill injected that the notebook does not declare (``-p flwo gc``), naming it, the
  closest declared name and the valid ones (one ValueError, so papermill exits non-zero);
- checks each declared parameter's type against its default (``-p n abc`` names n and the expected type);
- gives an ad-hoc run (parameters changed, ``variant`` not given) its own results folder,
  ``results/<notebook>/adhoc-<changed parameters>-<hash>/``, so runs with other parameters never overwrite the
  ``default`` variant or each other. ``variant`` is updated in the caller's namespace.

``check_param_values(notebook, params)`` applies the same rules to a parameter dict (``make reproduce`` checks
every params/<notebook>/*.yaml with it before running anything).

Parameters that become paths are checked as such: ``variant`` names the folder results/<notebook>/<variant>/ and
must be a plain name (letters, digits, '_', '-', '.', '='; no '/', no '..', not absolute), so a notebook writes
under the project's results/ only; ``base_config`` must be a relative path inside the project (no '..'). A
notebook run from outside the project tree says where its results go.
"""
from __future__ import annotations

import ast
import difflib
import hashlib
import json
import re
from types import SimpleNamespace

INJECTED_MARK = "# Parameters"   # the first line of the cell papermill injects
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=-]*")
PATH_PARAMS = ("base_config",)    # parameters read as a file path relative to the project root


def check_variant(notebook: str, variant) -> str:
    """``variant`` if it is a plain folder name for results/<notebook>/<variant>/ (one ValueError otherwise)."""
    if not isinstance(variant, str) or not PLAIN_NAME.fullmatch(variant) or ".." in variant:
        raise ValueError(f"{notebook}: parameter variant={variant!r} is not a plain name; use letters, digits, '_', "
                         f"'-', '.' and '=' (no '/', no '..', not an absolute path): it names the folder "
                         f"results/{notebook}/<variant>/")
    return variant


def check_project_path(notebook: str, name: str, value) -> str:
    """A parameter that names a file of the project: a relative path without '..' (one ValueError otherwise)."""
    from pathlib import PurePosixPath, PureWindowsPath
    parts = PurePosixPath(str(value)).parts
    if (not isinstance(value, str) or not value or PurePosixPath(value).is_absolute()
            or PureWindowsPath(value).is_absolute() or "\\" in value or ".." in parts):
        raise ValueError(f"{notebook}: parameter {name}={value!r} must be a path relative to the project root "
                         f"without '..' (e.g. params/train/toy.yaml)")
    return value


def notebook_parameters(notebook: str, root=None) -> dict:
    """{name: default} from the ``parameters`` cell of notebooks/<notebook>.ipynb (literal assignments), then the
    parameters of the notebook driver's spec (``gclib.experiments.spec``) that the cell does not spell, with the
    spec's defaults: a parameter added to the spec is a parameter of the notebook, ``-p`` and profiles included."""
    from ..report import project_root
    from .spec import spec_of
    path = project_root(root) / "notebooks" / f"{notebook}.ipynb"
    if not path.is_file():
        raise ValueError(f"notebook={notebook!r}: {path} does not exist")
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            declared = _assignments("".join(cell["source"]))
            spec = spec_of(notebook)
            return {**declared, **{k: v for k, v in (spec.defaults() if spec else {}).items() if k not in declared}}
    raise ValueError(f"{path} has no cell tagged 'parameters'")


class _FloatCalls(ast.NodeTransformer):
    """``float('nan')``, ``float('inf')``, ``float('-inf')`` (how papermill writes those floats) as constants."""

    def visit_Call(self, node):
        if (isinstance(node.func, ast.Name) and node.func.id == "float" and len(node.args) == 1 and not node.keywords
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            try:
                return ast.copy_location(ast.Constant(float(node.args[0].value)), node)
            except ValueError:
                return node
        return self.generic_visit(node)


def _literal(node):
    """The value of a literal expression, papermill's float('nan') and float('inf') included; ValueError else."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.literal_eval(_FloatCalls().visit(node))


def _assignments(source: str) -> dict:
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = _literal(node.value)
            except ValueError:
                out[node.targets[0].id] = None  # not a literal: any value accepted
    return out


def _type_ok(value, default) -> bool:
    if default is None or value is None and default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def _type_name(default) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
            tuple: "a list", dict: "a mapping"}.get(type(default), type(default).__name__)


def check_param_values(notebook: str, params: dict, root=None) -> dict:
    """Check names and types of ``params`` against the notebook's declared parameters; returns the declared
    defaults updated with ``params``. One ValueError naming the first bad parameter. None is the right type for a
    parameter whose spec rule is ``optional(...)`` (None: "the default", e.g. ``train_steps: null`` in a profile)."""
    from .spec import spec_of
    declared = notebook_parameters(notebook, root)
    spec = spec_of(notebook)
    may_be_none = {p.name for p in spec.params if getattr(p.rule, "accepts_none", False)} if spec else set()
    for name, value in params.items():
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"{notebook}: unknown parameter {name!r}; {hint}valid parameters: {', '.join(declared)}")
        if not _type_ok(value, declared[name]) and not (value is None and name in may_be_none):
            raise ValueError(f"{notebook}: parameter {name}={value!r} has the wrong type: expected "
                             f"{_type_name(declared[name])} (default {declared[name]!r})")
        if name == "variant":
            check_variant(notebook, value)
        elif name in PATH_PARAMS:
            check_project_path(notebook, name, value)
    return {**declared, **params}


def _injected(namespace: dict) -> dict:
    """The parameters papermill injected into this kernel (the newest '# Parameters' cell in IPython's history)."""
    history = namespace.get("In") or []
    for source in reversed(list(history)):
        if isinstance(source, str) and source.lstrip().startswith(INJECTED_MARK):
            return _assignments(source)
    return {}


def adhoc_variant(changed: dict) -> str:
    """A results folder name for an ad-hoc run: the changed parameters in short, and a hash of all of them."""
    parts = []
    for k, v in sorted(changed.items()):
        if isinstance(v, (str, int, float, bool)) and len(str(v)) <= 12:
            parts.append(f"{k}-{v}")
        else:
            parts.append(k)
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(parts))[:60].strip("_.")
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"adhoc-{slug}-{digest}"


def check_params(notebook: str, namespace: dict, root=None) -> SimpleNamespace:
    """Validate the parameters of a running notebook (call with ``globals()`` right after the parameters cell).
    Returns the parameters as a namespace; sets ``namespace['variant']`` for ad-hoc runs."""
    declared = notebook_parameters(notebook, root)
    injected = _injected(namespace)
    check_param_values(notebook, injected, root)
    current = {name: namespace.get(name, default) for name, default in declared.items()}
    check_param_values(notebook, current, root)
    changed = {k: v for k, v in current.items() if k != "variant" and v != declared[k]}
    if "variant" in declared and current.get("variant") == declared["variant"] and changed:
        current["variant"] = adhoc_variant(changed)
        namespace["variant"] = current["variant"]
    _say_where(notebook, current.get("variant"), root)
    return SimpleNamespace(**current)


def _say_where(notebook: str, variant, root=None) -> None:
    """Outside the project tree (no gclib pyproject.toml above the working directory) the results go to the
    installed project's results/: say where, once, so they are not looked for next to the notebook."""
    from pathlib import Path

    from ..report import project_root
    if root is not None or variant is None:
        return
    here = Path.cwd().resolve()
    target = project_root()
    if target != here and target not in here.parents:
        print(f"{notebook}: this notebook runs outside the gclib project tree; its results go to "
              f"{target / 'results' / notebook / str(variant)}")


# --------------------------------------------------------------------------------------------- value rules
# A notebook driver declares each parameter ONCE, with its rule, as a ``Param`` of its ``Spec``
# (``gclib.experiments.spec``); ``Spec.values`` applies every rule before any work. A rule is a function
# (name, value) -> None raising one ValueError that names the parameter, its value and what is allowed.
def positive_int(name: str, value) -> None:
    from ..checks import check_positive_int
    check_positive_int(name, value)


def int_at_least(lo: int):
    """An integer >= lo."""
    def check(name: str, value) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name}={value!r} is not valid; it must be an integer >= {lo}")
    return check


def distinct_ints(name: str, value) -> None:
    """A non-empty list of distinct integers."""
    ok = isinstance(value, (list, tuple)) and value and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value) and len(set(value)) == len(value)
    if not ok:
        raise ValueError(f"{name}={value!r} is not valid; it must be a non-empty list of distinct integers")


def nonempty(rule):
    """A non-empty list whose every element passes ``rule``."""
    def check(name: str, value) -> None:
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"{name}={value!r} is not valid; it must be a non-empty list")
        each(rule)(name, value)
    return check


def optional(rule):
    """``rule``, or None (the notebook's 'use the default' value)."""
    def check(name: str, value) -> None:
        if value is not None:
            rule(name, value)
    check.__doc__ = f"None or {rule.__doc__ or rule.__name__}"
    check.accepts_none = True   # ``check_param_values``: None is a value of the right type
    return check


def between(lo: float, hi: float, closed_hi: bool = False):
    """A number in (lo, hi) (or (lo, hi] with closed_hi)."""
    def check(name: str, value) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and lo < value and (
            value <= hi if closed_hi else value < hi)
        if not ok:
            raise ValueError(f"{name}={value!r} is not valid; it must be a number in ({lo}, {hi}{']' if closed_hi else ')'}")
    return check


def levels(lo: float | None = None, hi: float | None = None):
    """A non-empty list of positive finite levels (within [lo, hi] when given)."""
    def check(name: str, value) -> None:
        from ..checks import check_levels
        check_levels(name, value, lo=lo, hi=hi)
    return check


def each(rule):
    """A list (or None) whose every element passes ``rule`` (None elements allowed: 'the default')."""
    def check(name: str, value) -> None:
        if value is None:
            return
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}={value!r} is not valid; it must be a list")
        for v in value:
            if v is not None:
                try:
                    rule(name, v)
                except ValueError as e:
                    raise ValueError(f"{name}={list(value)!r} is not valid; every element: {e}") from None
    return check
