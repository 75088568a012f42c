"""What notebooks share: where the project and its results live, and how results are written.

A notebook calls ``out = results_dir("transport_cost", variant)`` and writes ``metrics.json`` (``write_metrics``),
CSV tables (``save_table``) and PNG figures (``save_figure``) there, all atomically, then prints
``summary(metrics)``: a short, rounded, deterministic text that nbval compares.
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


def results_dir(notebook: str, variant: str, root=None) -> Path:
    """results/<notebook>/<variant>/ under the project root, created."""
    d = project_root(root) / "results" / notebook / variant
    d.mkdir(parents=True, exist_ok=True)
    return d


def runs_dir(root=None) -> Path:
    """The cache of trained models (<runs>/<name>-<config hash>/), shared by all notebooks; not committed.
    ``$GCLIB_RUNS`` when set (a folder outside the work tree survives a fresh checkout, so long sweeps resume
    where they stopped), else runs/ under the project root."""
    import os
    env = os.environ.get("GCLIB_RUNS")
    return Path(env).expanduser() if env else project_root(root) / "runs"


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
    """metrics.json in ``out_dir`` (atomic)."""
    return write_json(Path(out_dir) / "metrics.json", metrics)


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
