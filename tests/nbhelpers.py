"""Shared helpers of the notebook tests: run a notebook with papermill into a throwaway results variant, and
read a notebook's parameter defaults."""
from __future__ import annotations

import ast
import json
import shutil
import uuid
from pathlib import Path

import nbformat
import papermill as pm
import yaml

from gclib.report import project_root

ROOT = project_root(Path(__file__).parent)


def parameters_of(nb_path: Path) -> dict:
    """The defaults of the notebook's `parameters` cell (literal assignments)."""
    nb = nbformat.read(str(nb_path), as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", []))
    out = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def load_params(name: str, variant: str) -> dict:
    """params/<name>/<variant>.yaml, checked to name its variant and to set only the notebook's parameters."""
    p = yaml.safe_load((ROOT / "params" / name / f"{variant}.yaml").read_text())
    assert p["variant"] == variant
    allowed = set(parameters_of(ROOT / "notebooks" / f"{name}.ipynb"))
    assert set(p) <= allowed, set(p) - allowed
    return p


def assert_paper_scale(cfg) -> None:
    """The paper's CIFAR-10 training set-up (docs/method.md): U-Net, batch 512, 100k steps, Lion 1e-4, pseudo-Huber."""
    assert (cfg.dataset, cfg.model, cfg.batch_size, cfg.total_steps) == ("cifar10", "unet_cifar10", 512, 100_000)
    assert (cfg.optimizer, cfg.lr, cfg.distance) == ("lion", 1e-4, "pseudo_huber")


def run_notebook(name: str, out_ipynb: Path, expected_files=(), **params) -> dict:
    """Execute notebooks/<name>.ipynb from the project root with a throwaway variant; check that the expected
    files were written; return its metrics.json. The variant's folder is removed afterwards."""
    variant = f"_pytest-{uuid.uuid4().hex[:8]}"
    out_dir = ROOT / "results" / name / variant
    try:
        pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out_ipynb),
                            parameters=dict(params, variant=variant), cwd=str(ROOT), kernel_name="python3",
                            progress_bar=False)
        files = {p.name for p in out_dir.iterdir()}
        missing = set(expected_files) - files
        assert not missing, f"{name} did not write {sorted(missing)}"
        return json.loads((out_dir / "metrics.json").read_text())
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def assert_fails_clearly(name: str, out_ipynb: Path, message: str, **params) -> None:
    """The notebook stops with ``message`` in its error, before writing its results folder."""
    variant = "_pytest-bad"
    try:
        pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out_ipynb),
                            parameters=dict(params, variant=variant), cwd=str(ROOT), kernel_name="python3",
                            progress_bar=False)
    except pm.PapermillExecutionError as err:
        assert message in str(err), str(err)[-2000:]
    else:
        raise AssertionError(f"{name} ran with bad parameters {params}")
    assert not (ROOT / "results" / name / variant).exists(), "failed only after starting work"
