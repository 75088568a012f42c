"""Plugins (issue 32, item 3): one module in a temporary folder, outside gclib, registers a coupling, a metric and a
data set; gclib imports it where a run is configured ($GCLIB_PLUGINS), with no file of the project edited.

The module is docs/plugins/gclib_example_plugin.py (the example of docs/extending.md), copied under another name:
- ``gclib train params/train/toy.yaml --flow reverse_ot`` trains with it from the command line (another process);
- a fid_curves sweep (``make_sweep`` + ``run_sweep``) with two spawned workers trains the plugin's coupling as its
  own curve, scored by the plugin's metric against the plugin's data set (each value recomputed here): re-routing
  OT's run (per_flow), and as one of the compared ``flows`` (``flows=["ic", "reverse_ot"]``), labelled by its name.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from gclib import plugins

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "plugins" / "gclib_example_plugin.py"
MODULE = "my_gclib_plugin"
TINY = ["total_steps=4", "eval_every=2", "eval_n=64", "num_data=256", "batch_size=32", "hidden=32", "depth=1",
        "checkpoint_every=0", "ema_every=1"]


@pytest.fixture
def plugin_dir(tmp_path):
    folder = tmp_path / "user_code"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / f"{MODULE}.py")
    return folder


@pytest.fixture
def loaded(plugin_dir, monkeypatch):
    """The plugin imported in this process as gclib imports it ($GCLIB_PLUGINS), removed again afterwards."""
    from gclib.couplings import unregister_coupling
    from gclib.data import unregister_dataset
    from gclib.evaluation import unregister_metric
    monkeypatch.setenv(plugins.ENV, MODULE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugin_dir), str(ROOT)]))   # spawned workers find it too
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setattr(plugins, "_loaded", {})
    assert plugins.load_plugins() == [MODULE] and plugins.load_plugins() == [MODULE]   # imported once
    yield sys.modules[MODULE]
    unregister_coupling("reverse_ot")
    unregister_metric("energy")
    unregister_dataset("ring")
    sys.modules.pop(MODULE, None)


def _gclib(args, env_extra, cwd=ROOT):
    env = {k: v for k, v in os.environ.items() if k != plugins.ENV}
    env.update(OMP_NUM_THREADS="1", **env_extra)
    return subprocess.run([sys.executable, "-m", "gclib", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_plugin_trains_from_the_command_line(plugin_dir, tmp_path):
    run = tmp_path / "run"
    args = ["train", "params/train/toy.yaml", "--flow", "reverse_ot", "--no-progress", "--set", "dataset=ring",
            "--set", "eval_metrics=[energy]", "--set", f"run_dir={run}"] + [a for t in TINY for a in ("--set", t)]
    r = _gclib(args, {plugins.ENV: MODULE, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(ROOT)])})
    assert r.returncode == 0, r.stderr[-2000:]
    done = json.loads((run / "done.json").read_text())
    assert done["step"] == 4
    ev = pd.read_csv(run / "eval.csv")
    assert list(ev.columns) == ["step", "energy"] and list(ev.step) == [2, 4] and (ev.energy > 0).all()
    import yaml
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["flow"], cfg["dataset"], cfg["name"]) == ("reverse_ot", "ring", "toy_reverse_ot")
    # the same command without the plugin: one line naming the flow, exit 2, nothing trained
    r = _gclib(args[:-2 * len(TINY)] + ["--set", f"run_dir={tmp_path / 'none'}"], {"PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "flow='reverse_ot' is not valid" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "none").exists()


def test_a_plugin_that_cannot_be_imported_is_one_line(tmp_path, monkeypatch, capsys):
    from gclib.cli import main
    monkeypatch.setattr(plugins, "_loaded", {})
    for named, words in [("no_such_gclib_plugin", "no module named 'no_such_gclib_plugin'"),
                         (str(tmp_path / "missing.py"), "the file does not exist")]:
        monkeypatch.setenv(plugins.ENV, named)
        assert main(["train", str(ROOT / "params/train/toy.yaml"), "--set", f"run_dir={tmp_path / 'r'}"]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "plugin" in err and len(err.splitlines()) == 1, err
    (tmp_path / "broken.py").write_text("raise RuntimeError('my plugin is broken')\n")
    monkeypatch.setenv(plugins.ENV, str(tmp_path / "broken.py"))
    with pytest.raises(plugins.PluginError, match="failed on import: RuntimeError: my plugin is broken"):
        plugins.load_plugins()
    assert not (tmp_path / "r").exists()


def test_a_plugin_file_path_and_an_entry_point_are_loaded(plugin_dir, monkeypatch):
    from importlib.metadata import EntryPoint
    from gclib.couplings import REGISTRY, unregister_coupling
    (plugin_dir / "tiny_plugin.py").write_text(
        "from gclib.couplings import IC, register_coupling\n"
        "class Tiny(IC):\n    pass\n"
        "register_coupling('tiny_file', Tiny)\n")
    (plugin_dir / "tiny_ep.py").write_text(
        "from gclib.couplings import IC, register_coupling\n"
        "class TinyEP(IC):\n    pass\n"
        "register_coupling('tiny_ep', TinyEP)\n")
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setattr(plugins, "_loaded", {})
    monkeypatch.setattr(plugins, "_entry_points", [EntryPoint("tiny", "tiny_ep", plugins.GROUP)])
    monkeypatch.setenv(plugins.ENV, f" {plugin_dir / 'tiny_plugin.py'} , ")
    try:
        assert plugins.load_plugins() == [str(plugin_dir / "tiny_plugin.py"), "gclib.plugins:tiny"]
        assert "tiny_file" in REGISTRY and "tiny_ep" in REGISTRY
    finally:
        for name in ("tiny_file", "tiny_ep"):
            unregister_coupling(name)
        for name in ("tiny_plugin", "tiny_ep"):
            sys.modules.pop(name, None)


def _scored_on_the_plugins_data(sw, curves) -> dict:
    """Every run of the sweep trained on the plugin's data set ("ring"), and each curve's last value is the plugin's
    metric recomputed against that data set from the run's checkpoint (against another data set it would differ).
    Returns {label: Config}."""
    from gclib.config import as_config, run_dir_for
    from gclib.data import load_dataset
    from gclib.evaluation import evaluate_model
    from gclib.experiments import fid_curves
    from gclib.models import load_model
    from gclib.rundir import RunPaths
    runs = {r.label: as_config(fid_curves.run_config(sw.base, r)) for r in sw.runs()}
    assert {c.dataset for c in runs.values()} == {"ring"}
    data, other = load_dataset("ring", n=256, seed=0), load_dataset("two_gaussians", n=256, seed=0)
    for label, cfg in runs.items():
        final = curves[(curves.label == label) & (curves.step == 4)].energy
        assert len(final) == 1
        _, ema, _ = load_model(RunPaths(run_dir_for(cfg)).checkpoint(4))
        again = evaluate_model(ema, data, ["energy"], n=64, seed=0, sigma_max=cfg.sigma_max)["energy"]
        assert float(final.iloc[0]) == pytest.approx(again, rel=1e-9, abs=1e-12)
        wrong = evaluate_model(ema, other, ["energy"], n=64, seed=0, sigma_max=cfg.sigma_max)["energy"]
        assert abs(wrong - again) > 0.05
    return runs


def test_a_plugin_gets_its_own_sweep_curve_in_two_workers(loaded, tmp_path):
    """fid_curves with 2 spawned workers: the OT run re-routed to the plugin's coupling (per_flow), every run on the
    plugin's data set and scored by the plugin's metric (its value recomputed here against that data set)."""
    from gclib.config import run_dir_for
    from gclib.experiments import fid_curves
    from gclib.models import load_model
    from gclib.rundir import RunPaths
    overrides = {k: v for k, v in (t.split("=") for t in TINY)}
    overrides = {k: int(v) for k, v in overrides.items()}
    overrides.update(ema_decay=0.5, dataset="ring", eval_metrics=["energy"], runs_dir=str(tmp_path / "runs"))
    sw = fid_curves.make_sweep("plugin_test", "params/train/toy.yaml", overrides, "energy", [0], [0.5],
                               include_ot=True, per_flow={"ot": {"flow": "reverse_ot"}}, workers=2, root=ROOT)
    sw.out = tmp_path / "out"
    curves = fid_curves.run_sweep(sw)
    assert sorted(curves.label.unique()) == ["GC mu=0.5", "IC", "OT"]
    runs = _scored_on_the_plugins_data(sw, curves)
    assert runs["OT"].flow == "reverse_ot"
    # the plugin's coupling trained differently from the runs that do not use it
    w = {label: load_model(RunPaths(run_dir_for(cfg)).checkpoint(4))[0].state_dict() for label, cfg in runs.items()}
    assert not all(torch.equal(w["OT"][k], w["IC"][k]) for k in w["IC"])
    assert len({round(v, 12) for v in curves[curves.step == 4].energy}) == 3
    assert (sw.out / "curves.csv").is_file()


def test_flows_give_a_plugin_coupling_its_own_curve_in_two_workers(loaded, tmp_path, monkeypatch):
    """``flows=["ic", "reverse_ot"]``, as a notebook gives it (fid_curves.setup from the notebook's declared
    parameters): the plugin's coupling is its own run and curve, labelled by its name, trained by 2 spawned workers
    on the plugin's data set and scored by the plugin's metric (the values recomputed here); Table 1 has its column."""
    from gclib.experiments import fid_curves
    from gclib.experiments.params import check_param_values
    monkeypatch.setattr("gclib.report.results_dir", lambda *a, **k: tmp_path / "out")
    overrides = {k: int(v) for k, v in (t.split("=") for t in TINY)}
    overrides.update(ema_decay=0.5, dataset="ring", eval_metrics=["energy"], runs_dir=str(tmp_path / "runs"))
    given = dict(variant="plugin_flows", base_config="params/train/toy.yaml", overrides=overrides, metric="energy",
                 seeds=[0], mus=[0.5], flows=["ic", "reverse_ot"], workers=2)
    sw = fid_curves.setup(check_param_values("fid_curves", given))   # a profile with these keys validates
    assert [(r.label, r.overrides) for r in sw.runs()] == [("IC", {"flow": "ic"}),
                                                           ("reverse_ot", {"flow": "reverse_ot"})]
    curves = fid_curves.run_sweep(sw)
    assert sorted(curves.label.unique()) == ["IC", "reverse_ot"]
    runs = _scored_on_the_plugins_data(sw, curves)
    assert runs["reverse_ot"].flow == "reverse_ot"
    t = fid_curves.table1(sw, curves)
    assert list(t.columns) == ["dataset", "metric", "iCT-IC", "iCT-reverse_ot"] and t.metric.iloc[0] == "energy"
    # without the plugin loaded, the same flows are one line naming the coupling, before any work
    from gclib.couplings import unregister_coupling
    unregister_coupling("reverse_ot")
    try:
        with pytest.raises(ValueError, match=r"^fid_curves: flows=\['ic', 'reverse_ot'\] is not valid; every "
                                             r"element: flow='reverse_ot' is not valid"):
            fid_curves.make_sweep(**{**given, "variant": "x"}, root=ROOT)
    finally:
        from gclib.couplings import register_coupling
        register_coupling("reverse_ot", loaded.ReverseOT)   # the fixture unregisters it again
