"""What notebooks share: where the project and its results live, and how results are written.

A notebook calls ``out = results_dir("transport_cost", variant)`` and writes ``metrics.json`` (``write_metrics``),
CSV tables (``save_table``) and PNG figures (``save_figure``) there, all atomically, then prints
``summary(metrics)``: a short, rounded, deterministic text that nbval compares.

Results are written whole or not at all (``gclib.staging``): ``out`` is a staged folder beside
results/<notebook>/<variant>/, which replaces that folder when the notebook writes its metrics.json, its last
result. A notebook that fails or is killed before leaves the old folder as it was; the next run cleans up. Under
``gclib reproduce`` (``$GCLIB_RESULTS_STAGE`` names the staged folder) the runner commits instead, after the
executed notebook is saved in the same folder.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

from .io import atomic_write, write_json, write_text


def project_root(start=None) -> Path:
    """The folder holding gclib's pyproject.toml, searched upwards from ``start`` (default: the working
    directory, so it works from the project root, from notebooks/, and under papermill or nbval)."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        pp = d / "pyproject.toml"
        if pp.is_file() and 'name = "gclib"' in pp.read_text(encoding="utf-8", errors="ignore"):
            return d
    return Path(__file__).resolve().parents[1]


STAGE_ENV = "GCLIB_RESULTS_STAGE"   # set by gclib.reproduce around a notebook: the staged folder it commits itself
_STAGES: dict = {}                  # results/<notebook>/<variant> -> its Stage, staged by this process


def results_dir(notebook: str, variant: str, root=None) -> Path:
    """Where the notebook writes results/<notebook>/<variant>/ under the project root: a staged folder beside it
    (created), which ``write_metrics`` commits (the module docstring); under ``$GCLIB_RESULTS_STAGE`` the staged
    folder ``gclib reproduce`` made for this variant. Asked again before the commit, the same folder."""
    import os
    from .staging import Stage
    final = project_root(root) / "results" / notebook / variant
    given = os.environ.get(STAGE_ENV)
    if given and Path(given).is_dir() and Path(given).parent.resolve() == final.parent.resolve() \
            and Path(given).name.startswith(f".{variant}.partial-"):
        return Path(given)
    stage = _STAGES.get(final)
    if stage is None or stage.done:
        stage = _STAGES[final] = Stage.begin(final)
        _abandon_at_exit()
    return stage.path


def _abandon_at_exit() -> None:
    """Once per process: at exit, staged folders never committed are removed (the old results stay)."""
    import atexit
    if not getattr(_abandon_at_exit, "done", False):
        atexit.register(lambda: [s.abandon() for s in list(_STAGES.values())])
        _abandon_at_exit.done = True


def runs_dir(root=None) -> Path:
    """The cache of trained models (<runs>/<name>-<config hash>/), shared by all notebooks; not committed.
    ``$GCLIB_RUNS`` when set (a folder outside the work tree survives a fresh checkout, so long sweeps resume
    where they stopped), else runs/ under the project root."""
    import os
    env = os.environ.get("GCLIB_RUNS")
    return env_folder("GCLIB_RUNS") if env else project_root(root) / "runs"


def env_folder(var: str, default=None) -> Path | None:
    """The folder that environment variable ``var`` names (taken as written, '~' expanded; never YAML), else
    ``default``. A value that names a file, or a folder below a file, is one ValueError naming the variable."""
    import os
    text = os.environ.get(var)
    if not text:
        return None if default is None else Path(default)
    path = Path(os.path.expanduser(text))
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            where = "is a file" if p == path else f"lies below the file {p}"
            raise NotADirectoryError(f"{var}={text} {where}, not a folder: point {var} at a folder (or unset it)")
        if p.exists():
            break
    return path


def writable_folder(path, what: str) -> Path:
    """Create folder ``path`` if needed and check that files can be written in it (a probe file is created and
    removed); one OSError naming ``what`` (e.g. 'GCLIB_RUNS=...') and the cause otherwise."""
    import os
    import tempfile
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise type(e)(e.errno, f"{what}: {path} cannot be written ({os.strerror(e.errno) if e.errno else e}); "
                               f"point it at a writable folder") from None
    return path


def sig(x: float, digits: int = 2) -> float:
    """x rounded to ``digits`` significant digits (for summaries)."""
    return float(f"{float(x):.{digits}g}")


def _rounded(v, digits):
    if isinstance(v, float):
        return sig(v, digits) if math.isfinite(v) else v
    if isinstance(v, dict):
        return {k: _rounded(x, digits) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_rounded(x, digits) for x in v]
    return v


def write_metrics(out_dir, metrics: dict) -> Path:
    """metrics.json in ``out_dir`` (atomic), the notebook's last result: a staged folder of this process
    (``results_dir``) then replaces results/<notebook>/<variant>/. Returns where metrics.json is now."""
    path = write_json(Path(out_dir) / "metrics.json", metrics)
    for stage in list(_STAGES.values()):
        if stage.path == Path(out_dir) and not stage.done:
            return stage.commit() / path.name
    return path


def save_table(df, path) -> Path:
    """A pandas DataFrame as CSV (atomic)."""
    return write_text(path, df.to_csv(index=False))


def save_figure(fig, path, dpi: int = 110, pdf: bool = True) -> Path:
    """A matplotlib figure as PNG (and the same figure as PDF beside it), atomically."""
    path = Path(path)
    for fmt, target in (("png", path), ("pdf", path.with_suffix(".pdf")))[:2 if pdf else 1]:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", **({"metadata": {"CreationDate": None}}
                                                                       if fmt == "pdf" else {}))
        atomic_write(target, lambda f: f.write(buf.getvalue()))
    return path


def show_figure(fig, path, dpi: int = 110) -> None:
    """Save ``fig`` (a ``matplotlib.figure.Figure``; PNG and PDF) and, inside IPython/Jupyter, display the PNG.
    No pyplot state and no backend change: the figure shows inline in JupyterLab and in papermill outputs."""
    display_png(save_figure(fig, path, dpi))


def display_png(path) -> None:
    """Show a PNG file inline when running inside IPython/Jupyter; nothing elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        return
    if get_ipython() is not None:
        display(Image(filename=str(path)))


def summary(metrics: dict, digits: int = 2) -> str:
    """One line per key, floats to ``digits`` significant digits, keys sorted: stable text for nbval."""
    lines = []
    for k in sorted(metrics):
        v = _rounded(metrics[k], digits)
        lines.append(f"{k}: {v}")
    return "\n".join(lines)
