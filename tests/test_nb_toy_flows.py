"""notebooks/toy_flows.ipynb (Fig. 1): a papermill smoke run at the defaults and the clear error for bad flows."""
from __future__ import annotations

from nbhelpers import ROOT, assert_fails_clearly, load_params, run_notebook

NB = ROOT / "notebooks" / "toy_flows.ipynb"


def test_defaults_gc_follows_the_field_better_than_ic(tmp_path):
    m = run_notebook("toy_flows", tmp_path / "out.ipynb", {"metrics.json", "alignment.csv", "paths.png", "alignment.png"})
    cos, dev = m["mean_cos"], m["mean_dev"]
    # Fig. 1's claim, with margins: GC's paths are better aligned with the PF-ODE field than IC's
    assert cos["gc"] > cos["ic"] + 0.01 and dev["gc"] < 0.5 * dev["ic"]
    assert cos["ot"] > cos["ic"] and dev["ot"] < dev["ic"]
    assert [c["holds"] for c in m["claims"]] == [True]


def test_bad_flow_fails_clearly(tmp_path):
    assert_fails_clearly("toy_flows", tmp_path / "bad.ipynb", "flow='cd' is not valid; allowed values: 'ic', 'ot', 'gc'",
                         flows=["ic", "cd"])


def test_cpu_params_are_notebook_parameters():
    load_params("toy_flows", "cpu")
