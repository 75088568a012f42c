"""A notebook driver's parameters, declared once: a ``Spec`` is the list of its ``Param``s, each with its default,
its doc line, the rule its value obeys and what it is part of. Everything that lists a driver's parameters is
derived from that one object, so a new parameter is one ``Param``:

- the notebook's declared parameters (``params.notebook_parameters``: the parameters cell's assignments, and the
  spec's fields that the cell does not spell, with their defaults), hence ``check_params``, ad-hoc variants and
  ``make reproduce``'s check of every profile;
- the value check (``Spec.check``: every rule on every value, one line per bad value, before any work);
- the builder's arguments (``Spec.bind``: positional and keyword arguments of e.g. ``fid_sweep.make_sweep``, the
  defaults filled in, an unknown or missing argument named) and the keys a profile's YAML may give
  (``Spec.sweep_keys``);
- the training configuration of every run (``Param.config``: a Config field of the same name set on each run,
  so part of each run's identity) and the settings a results table and metrics.json list (``Param.column``).

A driver registers its spec (``register_spec``) under its notebook's name; ``spec_of(notebook)`` finds it (the
driver named after the notebook, ``gclib.experiments.<notebook>``, is imported when it has not been).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, Callable


@dataclass(frozen=True)
class Param:
    """One parameter of a notebook driver.

    default: the notebook's default (the parameters cell, when it spells the parameter, must agree).
    doc: one line on what it means. rule: ``(name, value) -> None`` raising one ValueError that names the value
    and what is allowed (``gclib.experiments.params``' rules), or None (any value of the default's type).
    sweep: an argument of the driver's builder (``make_sweep``), read from a profile's YAML; False for a
    notebook-only parameter. required: the builder needs it given (the notebook always has its default).
    config: the value (unless None) is the Config field of the same name on every run: part of each run's
    identity. column: the value is listed in the driver's results table and in metrics.json."""
    name: str
    default: Any
    doc: str
    rule: Callable | None = None
    sweep: bool = True
    required: bool = False
    config: bool = False
    column: bool = False


@dataclass(frozen=True, repr=False)
class Spec:
    """The parameters of one notebook driver, in the notebook's order; the first ``positional`` sweep parameters
    may be given positionally to the builder."""
    notebook: str
    params: tuple
    positional: int = 0

    def __post_init__(self):
        names = [p.name for p in self.params]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"spec {self.notebook!r}: parameter(s) {twice} declared twice")

    def __repr__(self) -> str:
        return f"Spec({self.notebook!r}: {', '.join(self.names)})"

    # ------------------------------------------------------------------------------------------------ views
    @property
    def names(self) -> tuple:
        return tuple(p.name for p in self.params)

    @property
    def sweep_keys(self) -> tuple:
        """The builder's arguments, which a profile params/<notebook>/<variant>.yaml may give."""
        return tuple(p.name for p in self.params if p.sweep)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"spec {self.notebook!r} has no parameter {name!r}")

    def defaults(self) -> dict:
        """{name: default} (copies: a caller may change a list or dict it gets)."""
        return {p.name: copy.deepcopy(p.default) for p in self.params}

    def rules(self) -> dict:
        """{name: rule} of the parameters with a rule (what ``check`` applies)."""
        return {p.name: p.rule for p in self.params if p.rule is not None}

    def with_params(self, *new: Param) -> "Spec":
        """A copy of this spec with ``new`` parameters appended (a driver's spec is never changed in place)."""
        return replace(self, params=tuple(self.params) + tuple(new))

    # ------------------------------------------------------------------------------------------------ checks
    def check(self, values: dict) -> None:
        """Every rule on the values ``values`` gives; one ValueError with one line per bad value, each line
        prefixed with the notebook's name, before any work."""
        bad = []
        for p in self.params:
            if p.rule is None or p.name not in values:
                continue
            try:
                p.rule(p.name, values[p.name])
            except ValueError as e:
                bad.append(f"{self.notebook}: {e}")
        if bad:
            raise ValueError("\n".join(bad))

    def values(self, params) -> dict:
        """The checked values of a notebook's parameter mapping (a dict, or the namespace ``check_params``
        returns): the user's plugins imported first (a registered coupling, metric or data set is a valid value),
        the defaults filled in for parameters it does not give, then ``check``. Names the spec does not declare
        are kept (a notebook's own extra parameters)."""
        from ..plugins import load_plugins
        load_plugins()
        given = dict(vars(params)) if isinstance(params, SimpleNamespace) else dict(params)
        out = {**self.defaults(), **given}
        self.check(out)
        return out

    def bind(self, args: tuple, kwargs: dict, what: str = "make_sweep") -> dict:
        """The builder's arguments as {name: value} for every sweep parameter: ``args`` bound to the first
        ``positional`` ones, then ``kwargs``; defaults for the rest. A TypeError names an unknown, repeated or
        missing required argument."""
        keys = self.sweep_keys
        if len(args) > self.positional:
            raise TypeError(f"{what}() takes {self.positional} positional arguments but {len(args)} were given")
        out = dict(zip(keys, args))
        for k, v in kwargs.items():
            if k not in keys:
                raise TypeError(f"{what}() got an unexpected argument {k!r}; its arguments: {', '.join(keys)}")
            if k in out:
                raise TypeError(f"{what}() got multiple values for argument {k!r}")
            out[k] = v
        missing = [p.name for p in self.params if p.sweep and p.required and p.name not in out]
        if missing:
            raise TypeError(f"{what}() missing required argument(s): {', '.join(missing)}")
        defaults = self.defaults()
        return {k: out[k] if k in out else defaults[k] for k in keys}

    # ------------------------------------------------------------------------------------------------ derived
    def config_overrides(self, values: dict) -> dict:
        """{Config field: value} of the ``config`` parameters that ``values`` sets (None: the base's value)."""
        return {p.name: values[p.name] for p in self.params if p.config and values.get(p.name) is not None}

    def with_config(self, values: dict, overrides: dict | None, where: str = "overrides") -> dict:
        """``overrides`` (Config fields, a parameter of the driver named ``where``) with the ``config``
        parameters' values added; one ValueError naming a field given both ways."""
        settings = self.config_overrides(values)
        both = sorted(set(settings) & set(overrides or {}))
        if both:
            raise ValueError(f"{self.notebook}: {', '.join(both)}: given both as a parameter and in {where}; "
                             f"give it once")
        return {**(overrides or {}), **settings}

    def columns(self, values) -> dict:
        """{name: value} of the ``column`` parameters (``values``: a dict, or an object with those attributes)."""
        get = values.get if isinstance(values, dict) else lambda n: getattr(values, n)
        return {p.name: get(p.name) for p in self.params if p.column}

    def signature(self, **extra):
        """The builder's ``inspect.Signature`` (what ``help`` and editors show): the first ``positional`` sweep
        parameters positional-or-keyword, the rest keyword-only, required ones without a default; ``extra``
        keyword-only {name: default} after them (e.g. root)."""
        import inspect
        kinds = [inspect.Parameter.POSITIONAL_OR_KEYWORD] * self.positional
        sweep = [p for p in self.params if p.sweep]
        out = [inspect.Parameter(p.name, kinds[i] if i < len(kinds) else inspect.Parameter.KEYWORD_ONLY,
                                 **({} if p.required else {"default": p.default})) for i, p in enumerate(sweep)]
        out += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in extra.items()]
        return inspect.Signature(out)

    def describe(self) -> str:
        """One line per parameter: name, default, doc (for docstrings and ``help``)."""
        return "\n".join(f"{p.name} = {p.default!r}: {p.doc}" for p in self.params)


# --------------------------------------------------------------------------------------------- registry
SPECS: dict = {}


def register_spec(spec: Spec) -> Spec:
    """Make ``spec`` the parameters of its notebook (a driver calls this at import); returns it."""
    SPECS[spec.notebook] = spec
    return spec


def spec_of(notebook: str) -> Spec | None:
    """The registered spec of ``notebook``, importing its driver ``gclib.experiments.<notebook>`` when there is
    one and it has not been imported; None for a notebook without a spec."""
    if notebook not in SPECS:
        import importlib
        import importlib.util
        name = f"{__package__}.{notebook}"
        if notebook.isidentifier() and importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    return SPECS.get(notebook)
