"""User code that extends gclib without editing it: plugin modules, imported where a run is configured.

A plugin is a Python module that registers what it adds when imported: couplings (``gclib.couplings.
register_coupling``), losses (``gclib.objectives.register_loss``), metrics (``gclib.evaluation.register_metric``)
and data sets (``gclib.data.register_dataset``). gclib imports

- the modules named in ``$GCLIB_PLUGINS``, comma-separated: importable module names (on ``sys.path``, e.g. through
  ``PYTHONPATH``) or paths of ``.py`` files;
- the entry points of the group ``gclib.plugins`` of the installed packages (in a package's pyproject.toml:
  ``[project.entry-points."gclib.plugins"]`` ``mine = "mypackage.gclib_plugin"``).

``load_plugins()`` imports each of them once per process and is called wherever a configuration enters a process:
the ``gclib`` command before any command runs (so also every torchrun rank), every notebook driver's ``setup``
(``gclib.experiments.spec.Spec.values``), and every worker entry point (the spawned processes of a sweep's local
pool, submitit jobs, ``fid_curves._train_one``, ``stack.train_stack_job``). A plugin that cannot be imported is one
``PluginError`` line naming it and where it was named, before any work.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ENV = "GCLIB_PLUGINS"
GROUP = "gclib.plugins"

_loaded: dict = {}        # what was named -> the imported module (this process)
_entry_points: list | None = None   # the group's entry points, read once per process


class PluginError(ValueError):
    """A plugin module that cannot be imported (not found, or an error in its own code)."""


def named_plugins() -> list[str]:
    """The plugins named in ``$GCLIB_PLUGINS`` (module names or .py paths), in order, blanks dropped."""
    return [p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip()]


def _group() -> list:
    global _entry_points
    if _entry_points is None:
        from importlib.metadata import entry_points
        _entry_points = list(entry_points(group=GROUP))
    return _entry_points


def _import_file(path: Path) -> ModuleType:
    name = path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module    # so that its classes pickle by reference, as an imported module's do
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _load(name: str, where: str, load) -> ModuleType:
    try:
        return load()
    except ModuleNotFoundError as e:
        if e.name and not name.endswith(".py") and (name == e.name or name.startswith(e.name + ".")):
            raise PluginError(f"plugin {name!r} (named in {where}) cannot be imported: no module named {e.name!r}; "
                              f"give a module on sys.path (e.g. through PYTHONPATH) or the path of a .py file") from e
        raise PluginError(f"plugin {name!r} (named in {where}) failed on import: {type(e).__name__}: {e}") from e
    except Exception as e:
        raise PluginError(f"plugin {name!r} (named in {where}) failed on import: {type(e).__name__}: "
                          f"{' '.join(str(e).split())}") from e


def load_plugins() -> list[str]:
    """Import every plugin named in ``$GCLIB_PLUGINS`` and in the entry-point group ``gclib.plugins`` that this
    process has not imported yet; returns what is loaded, in order (earlier calls' plugins included). Raises one
    ``PluginError`` naming a plugin that cannot be imported."""
    for name in named_plugins():
        if name in _loaded:
            continue
        path = Path(name).expanduser()
        if name.endswith(".py"):
            if not path.is_file():
                raise PluginError(f"plugin {name!r} (named in ${ENV}): the file does not exist")
            _loaded[name] = _load(name, f"${ENV}", lambda: _import_file(path.resolve()))
        else:
            _loaded[name] = _load(name, f"${ENV}", lambda: importlib.import_module(name))
    for ep in _group():
        key = f"{GROUP}:{ep.name}"
        if key not in _loaded:
            _loaded[key] = _load(ep.value, f"entry point {ep.name!r} of group {GROUP!r}", ep.load)
    return list(_loaded)
