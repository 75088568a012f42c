"""The notebooks in notebooks/ are committed with their outputs (nbval's reference): those outputs must not hold a
path of the machine that executed them (a run cache under /tmp, the home folder, the checkout itself)."""
import json
import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def machine_paths(nb: dict, roots=None) -> list[str]:
    """'cell N: text' for each stored output that names one of ``roots`` (default: this checkout, the home folder
    and the temporary folder)."""
    roots = roots or [str(ROOT), os.path.expanduser("~"), tempfile.gettempdir(), "/tmp/"]
    roots = [r for r in roots if r and r != "/"]
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", "")) + json.dumps(out.get("data", {}))
            found += [f"cell {i}: {line.strip()[:120]}" for line in text.splitlines() if any(r in line for r in roots)]
    return found


def test_the_check_finds_a_path():
    nb = {"cells": [{"outputs": [{"text": ["[run] started: /tmp/nbruns/run-1, steps 1..4\n"]}]},
                    {"outputs": [{"data": {"text/plain": "'/home/me/gclib/results'"}}]}]}
    assert [f.split(":")[0] for f in machine_paths(nb, ["/tmp/", "/home/me"])] == ["cell 0", "cell 1"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_hold_no_machine_path(path):
    assert machine_paths(json.loads(path.read_text())) == []
