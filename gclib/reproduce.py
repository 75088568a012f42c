"""``make reproduce``: run every notebook with each of its cpu parameter sets through papermill into
results/<notebook>/<variant>/, then write results/README.md: the figures, and each paper claim against what
was measured here (from the notebooks' metrics.json)."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from .io import write_text
from .report import project_root

NOTEBOOK_ORDER = ("toy_flows", "ct_cd_gap", "transport_cost", "fid_curves")


def _notebooks(root: Path) -> list[Path]:
    found = {p.stem: p for p in (root / "notebooks").glob("*.ipynb")}
    return [found[n] for n in NOTEBOOK_ORDER if n in found] + [p for n, p in sorted(found.items()) if n not in NOTEBOOK_ORDER]


def reproduce(root=None, variants_glob: str = "cpu*.yaml", only: str | None = None) -> int:
    root = project_root(root)
    notebooks = _notebooks(root)
    if not notebooks:
        print("No notebooks yet in notebooks/: nothing to reproduce.")
        return 0
    import papermill as pm
    import yaml

    timings = {}
    for nb in notebooks:
        if only and nb.stem != only:
            continue
        for params in sorted((root / "params" / nb.stem).glob(variants_glob)):
            parameters = yaml.safe_load(params.read_text()) or {}
            variant = parameters.setdefault("variant", params.stem)
            out = root / "results" / nb.stem / variant
            out.mkdir(parents=True, exist_ok=True)
            print(f"== {nb.relative_to(root)} with {params.relative_to(root)} -> {out.relative_to(root)}", flush=True)
            t0 = time.perf_counter()
            pm.execute_notebook(str(nb), str(out / nb.name), parameters=parameters, cwd=str(root / "notebooks"),
                                kernel_name="python3", progress_bar=False)
            timings[f"{nb.stem}/{variant}"] = time.perf_counter() - t0
            print(f"   done in {timings[f'{nb.stem}/{variant}']:.0f} s", flush=True)
    write_results_readme(root, timings)
    print(f"wrote {root / 'results' / 'README.md'}")
    return 0


def _claim_rows(root: Path):
    for nb in NOTEBOOK_ORDER:
        for m in sorted((root / "results" / nb).glob("*/metrics.json")):
            if m.parent.name == "default":
                continue
            data = json.loads(m.read_text())
            for c in data.get("claims", []):
                yield nb, m.parent.name, c


def write_results_readme(root: Path, timings: dict | None = None) -> Path:
    """results/README.md from whatever results/<notebook>/<variant>/ hold (default variants excluded)."""
    results = root / "results"
    lines = ["# Results measured on this machine", "",
             "Written by `make reproduce` (gclib/reproduce.py) from each notebook's `metrics.json`; every verdict is "
             "computed from the measurement, none is typed in.", ""]
    if timings:
        import torch
        lines += [f"Machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
                  f"torch {torch.__version__}, Python {platform.python_version()}.", "",
                  "| notebook / variant | wall time (s) |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()] + [""]
    lines += ["## Paper claims against what was measured here", "",
              "| notebook | variant | claim | holds here | measured |", "|---|---|---|---|---|"]
    for nb, variant, c in _claim_rows(root):
        mark = "yes" if c["holds"] else "**no**"
        lines.append(f"| {nb} | {variant} | {c['claim']} | {mark} | {c['measured']} |")
    lines.append("")
    for nb in NOTEBOOK_ORDER:
        for d in sorted(p for p in (results / nb).glob("*") if p.is_dir() and p.name != "default"):
            pngs = sorted(d.glob("*.png"))
            if not pngs:
                continue
            lines += [f"## {nb} / {d.name}", "", f"Executed notebook: [{nb}.ipynb]({nb}/{d.name}/{nb}.ipynb)", ""]
            lines += [f"![{p.stem}]({nb}/{d.name}/{p.name})" for p in pngs] + [""]
    return write_text(results / "README.md", "\n".join(lines))
