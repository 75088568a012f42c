"""Run every notebook in notebooks/ with each of its cpu parameter sets (params/<notebook>/cpu*.yaml)."""
from __future__ import annotations

from pathlib import Path


def reproduce(root: str | Path = ".", variants_glob: str = "cpu*.yaml") -> int:
    root = Path(root)
    notebooks = sorted((root / "notebooks").glob("*.ipynb"))
    if not notebooks:
        print("No notebooks yet in notebooks/: nothing to reproduce.")
        return 0
    import papermill as pm
    import yaml
    for nb in notebooks:
        for params in sorted((root / "params" / nb.stem).glob(variants_glob)):
            out = root / "results" / nb.stem / params.stem
            out.mkdir(parents=True, exist_ok=True)
            print(f"== {nb.name} with {params} -> {out}")
            pm.execute_notebook(str(nb), str(out / nb.name), parameters=yaml.safe_load(params.read_text()) or {},
                                cwd=str(root), kernel_name="python3")
    return 0
