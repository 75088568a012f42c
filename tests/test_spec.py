"""One spec object per notebook driver (issue 32, item 4): every parameter is declared once, as a ``Param`` of the
driver's ``Spec``, and setup, the sweep and the table are built from it, so a new sweep parameter is one field.

- the notebook's parameters cell and the spec agree (names and defaults), and a field the cell does not spell is
  still a declared parameter of the notebook (``check_params``, profiles);
- a field added to a copy of fid_curves' spec reaches setup's checks, the notebook's declared parameters, every
  run's configuration (its identity) and Table 1 / metrics.json, with no other edit;
- bad values: one line each, all of them, before any work;
- ``flows``: the couplings a sweep compares, each its own curve labelled by its name.
"""
from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest

from gclib.experiments import fid_sweep, spec as spec_mod
from gclib.experiments.params import (_assignments, check_param_values, notebook_parameters, optional,
                                      positive_int)
from gclib.experiments.spec import Param, Spec

ROOT = Path(__file__).resolve().parents[1]
DRIVERS = ("fid_curves", "ct_cd_gap", "transport_cost", "toy_flows")


def _cell(notebook: str) -> dict:
    nb = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    return _assignments("".join(cell["source"]))


@pytest.mark.parametrize("notebook", DRIVERS)
def test_the_parameters_cell_agrees_with_the_spec(notebook):
    spec = spec_mod.spec_of(notebook)
    if spec is None:
        pytest.skip(f"{notebook}'s driver has no Spec yet")
    cell = _cell(notebook)
    assert set(cell) <= set(spec.names), set(cell) - set(spec.names)
    defaults = spec.defaults()
    for name, value in cell.items():
        assert value == defaults[name], (name, value, defaults[name])
    assert set(spec.rules()) <= set(notebook_parameters(notebook))


def test_spec_checks_can_fail_and_name_every_bad_value():
    spec = Spec("demo", (Param("n", 3, "a count", rule=positive_int), Param("k", 1, "another", rule=positive_int),
                         Param("s", "x", "no rule")))
    assert spec.values({"n": 5})["k"] == 1
    with pytest.raises(ValueError) as e:
        spec.values({"n": 0, "k": -1})
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and lines[0].startswith("demo: n=0") and lines[1].startswith("demo: k=-1")
    with pytest.raises(ValueError, match="declared twice"):
        Spec("demo", (Param("n", 1, ""), Param("n", 2, "")))
    with pytest.raises(TypeError, match="unexpected argument 'm'"):
        spec.bind((), {"m": 1})
    with pytest.raises(TypeError, match="missing required argument"):
        Spec("d", (Param("a", 1, "", required=True),)).bind((), {})
    assert spec.with_params(Param("t", 0, "")).names == ("n", "k", "s", "t") and spec.names == ("n", "k", "s")


def test_setup_names_every_bad_value_on_its_own_line():
    declared = notebook_parameters("fid_curves")
    with pytest.raises(ValueError) as e:
        fid_sweep.setup({**declared, "seeds": [0, 0], "workers": 0, "flows": ["ic", "nope"]})
    lines = str(e.value).splitlines()
    assert len(lines) == 3 and all(line.startswith("fid_curves: ") for line in lines)
    assert "seeds=[0, 0] is not valid" in lines[0] and "workers=0" in lines[1] and "flow='nope'" in lines[2]


def _curves(labels, metric="w2", seeds=(0, 1)):
    return pd.DataFrame([{"label": l, "seed": s, "step": step, metric: 1.0 + i + 0.1 * s + 1.0 / step}
                         for i, l in enumerate(labels) for s in seeds for step in (100, 200)])


def test_a_new_sweep_parameter_is_one_field(tmp_path, monkeypatch):
    """``num_data`` as a sweep parameter: one Param on a copy of the spec, and it is a declared notebook parameter,
    checked by setup, set on every run's configuration (a new run identity) and listed in Table 1 and
    metrics.json; the driver's own spec is unchanged."""
    from gclib.config import as_config, config_hash
    from gclib.experiments import fid_curves
    new = Param("num_data", None, "training points of every run", rule=optional(positive_int), config=True,
                column=True)
    spec = fid_sweep.SPEC.with_params(new)
    assert "num_data" not in fid_sweep.SPEC.names and "num_data" not in notebook_parameters("fid_curves")
    monkeypatch.setitem(spec_mod.SPECS, "fid_curves", spec)
    monkeypatch.setattr("gclib.report.results_dir", lambda *a, **k: tmp_path / "out")
    declared = notebook_parameters("fid_curves")
    assert declared["num_data"] is None                                       # the notebook declares it
    assert check_param_values("fid_curves", {"num_data": 512})["num_data"] == 512   # a profile may give it
    with pytest.raises(ValueError, match="fid_curves: num_data=0 is out of range"):
        fid_sweep.setup({**declared, "num_data": 0}, spec=spec)
    p = {**declared, "variant": "t", "seeds": [0, 1], "mus": [0.5]}
    plain, sw = fid_sweep.setup(p, spec=spec), fid_sweep.setup({**p, "num_data": 512}, spec=spec)
    cfgs = [as_config(fid_curves.run_config(sw.base, r)) for r in sw.runs()]
    before = [as_config(fid_curves.run_config(plain.base, r)) for r in plain.runs()]
    assert len(cfgs) == 6 and {c.num_data for c in cfgs} == {512} and {c.num_data for c in before} != {512}
    assert not {config_hash(c) for c in cfgs} & {config_hash(c) for c in before}   # its own runs
    # the unchanged spec gives the plain sweep's runs, and refuses the new argument
    same = fid_sweep.make_sweep(**{k: p[k] for k in fid_sweep.SWEEP_KEYS})
    assert [fid_curves.run_config(same.base, r) for r in same.runs()] == \
        [fid_curves.run_config(plain.base, r) for r in plain.runs()]
    with pytest.raises(TypeError, match="unexpected argument 'num_data'"):
        fid_sweep.make_sweep(**{k: p[k] for k in fid_sweep.SWEEP_KEYS}, num_data=512)
    # a profile's YAML gives it
    import yaml
    (tmp_path / "v.yaml").write_text(yaml.safe_dump({**{k: p[k] for k in fid_sweep.SWEEP_KEYS}, "num_data": 512}))
    assert fid_sweep.sweep_from_params(tmp_path / "v.yaml", root=ROOT, spec=spec).base["num_data"] == 512
    # Table 1 and metrics.json list it beside the metric
    sw.out = tmp_path / "out"
    curves = _curves(sw.mu_labels)
    t = fid_curves.table1(sw, curves)
    assert list(t.columns[:3]) == ["dataset", "metric", "num_data"] and t.num_data.iloc[0] == 512
    assert fid_curves.table1(plain, curves).num_data.iloc[0] is None   # the base's value: the same columns
    fid_curves.write_claims(sw, curves, [])
    written = json.loads((sw.out / "metrics.json").read_text())
    assert written["num_data"] == 512 and written["metric"] == "w2"
    # given twice (a parameter and an override): one line
    with pytest.raises(ValueError, match="num_data: given both as a parameter and in overrides"):
        fid_sweep.setup({**p, "num_data": 512, "overrides": {**p["overrides"], "num_data": 64}}, spec=spec)


def test_flows_are_the_curves_of_a_sweep(tmp_path, monkeypatch):
    from gclib.experiments import fid_curves
    monkeypatch.setattr("gclib.report.results_dir", lambda *a, **k: tmp_path / "out")
    p = {**notebook_parameters("fid_curves"), "variant": "t", "seeds": [0], "mus": [0.5]}
    configs = lambda sw: [fid_curves.run_config(sw.base, r) for r in sw.runs()]
    default = fid_sweep.setup(p)
    assert configs(fid_sweep.setup({**p, "flows": ["ic", "gc", "ot"]})) == configs(default)   # None is these
    assert configs(fid_sweep.setup({**p, "flows": ["ic", "gc"]})) == configs(fid_sweep.setup({**p, "include_ot": False}))
    sw = fid_sweep.setup({**p, "flows": ["ot", "ic"]})
    assert [(r.label, r.overrides["flow"]) for r in sw.runs()] == [("IC", "ic"), ("OT", "ot")]
    assert sw.mu_labels == ["IC", "OT"] and sw.gc_main is None
    t = fid_curves.table1(sw, _curves(sw.mu_labels))
    assert list(t.columns) == ["dataset", "metric", "iCT-IC", "iCT-OT"]
    assert fid_curves.sweep_claims(sw, _curves(sw.mu_labels)) == []   # the paper's rows compare GC
    for bad, words in [({"flows": ["ic", "ic"]}, "names a coupling twice"),
                       ({"flows": []}, "non-empty list"),
                       ({"flows": ["ic", "ot"], "include_ot": False}, "include_ot=False contradicts"),
                       ({"flows": ["gc"], "frozen": {"strong": 300}}, "needs the IC run")]:
        with pytest.raises(ValueError, match=words):
            fid_sweep.setup({**p, **bad})


@pytest.mark.parametrize("notebook", ["ct_cd_gap", "transport_cost", "toy_flows"])
def test_a_config_field_added_to_a_driver_spec_reaches_its_trained_model(notebook, tmp_path, monkeypatch):
    """The other drivers: a ``config`` Param on a copy of the spec is a declared parameter of the notebook, checked
    by setup (one line) and set on the trained model's configuration (its own run), with no other edit."""
    import importlib

    from gclib.config import config_hash
    driver = importlib.import_module(f"gclib.experiments.{notebook}")
    spec = driver.SPEC.with_params(Param("num_data", None, "training points", rule=optional(positive_int),
                                         config=True))
    monkeypatch.setitem(spec_mod.SPECS, notebook, spec)
    monkeypatch.setattr("gclib.report.results_dir", lambda *a, **k: tmp_path / "out")
    declared = {**notebook_parameters(notebook), "device": "cpu"} if "device" in spec.names else \
        notebook_parameters(notebook)
    assert declared["num_data"] is None and "num_data" not in driver.SPEC.names
    plain, cfg = driver.setup(declared, spec=spec)[0], driver.setup({**declared, "num_data": 96}, spec=spec)[0]
    assert cfg.num_data == 96 and plain.num_data != 96 and config_hash(cfg) != config_hash(plain)
    assert driver.setup(declared)[0] == plain          # the driver's own spec: the same run as before
    with pytest.raises(ValueError, match=rf"^{notebook}: num_data=0 is out of range"):
        driver.setup({**declared, "num_data": 0}, spec=spec)
    with pytest.raises(ValueError, match="num_data: given both as a parameter and in train_overrides"):
        driver.setup({**declared, "num_data": 96, "train_overrides": {**declared["train_overrides"], "num_data": 8}},
                     spec=spec)


@pytest.mark.parametrize("notebook", DRIVERS)
def test_every_committed_profile_passes_the_reproduce_check(notebook):
    """``make reproduce`` checks each params/<notebook>/*.yaml with ``check_param_values`` before running anything;
    ``train_steps: null`` (the gpu profiles) is valid where the spec's rule is ``optional``, and only there."""
    import yaml
    files = sorted((ROOT / "params" / notebook).glob("*.yaml"))
    assert files
    for f in files:
        check_param_values(notebook, yaml.safe_load(f.read_text()) or {})
    if notebook in ("ct_cd_gap", "transport_cost"):
        assert check_param_values(notebook, {"train_steps": None})["train_steps"] is None
        with pytest.raises(ValueError, match=rf"{notebook}: parameter n\w*=None has the wrong type"):
            check_param_values(notebook, {"n_gap" if notebook == "ct_cd_gap" else "n": None})


def test_make_sweep_shows_the_spec_as_its_signature():
    import inspect
    sig = inspect.signature(fid_sweep.make_sweep)
    assert list(sig.parameters) == list(fid_sweep.SWEEP_KEYS) + ["root", "spec"]
    assert [n for n, p in sig.parameters.items() if p.default is inspect.Parameter.empty] == \
        ["variant", "base_config", "overrides", "metric", "seeds", "mus"]
    assert sig.parameters["flows"].default is None and sig.parameters["workers"].kind.name == "POSITIONAL_OR_KEYWORD"
    assert sig.parameters["executor"].kind.name == "KEYWORD_ONLY"
    with pytest.raises(TypeError, match="takes 13 positional arguments but 14"):
        fid_sweep.make_sweep(*range(14))
