"""The gclib command: train -> sample -> evaluate on a toy, help, one-line errors with non-zero status."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from gclib.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gclib", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_train_sample_evaluate_toy(tmp_path):
    cfg = dict(name="cli", dataset="8gaussians", num_data=256, model="mlp", hidden=16, depth=1, emb_dim=8,
               sigma_max=5.0, s0=2, s1=8, distance="l2", optimizer="adam", lr=1e-3, batch_size=32, total_steps=10,
               checkpoint_every=5, progress=False)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = run(["train", "c.yaml", "--set", "flow=gc", "--set", "mu=0.5", "--run-dir", "run"], tmp_path)
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path / "run" / "checkpoints" / "ckpt-00000010.pt"
    assert ckpt.is_file()
    # sample (.npz and .png) and evaluate in one process to stay fast
    assert main(["sample", str(ckpt), "--n", "50", "--steps", "2", "--out", str(tmp_path / "s.npz")]) == 0
    s = np.load(tmp_path / "s.npz")["samples"]
    assert s.shape == (50, 2) and np.isfinite(s).all()
    assert main(["sample", str(ckpt), "--n", "20", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    out = tmp_path / "e.json"
    assert main(["evaluate", str(ckpt), "--metric", "w2", "--metric", "nn_dist", "--n", "64", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["w2"] > 0 and res["nn_dist"] >= 0 and res["n"] == 64


@pytest.mark.parametrize("argv,pattern", [
    (["train", "{cfg}", "--set", "lerning_rate=1"], "unknown configuration key 'lerning_rate'"),
    (["train", "{cfg}", "--set", "flow=xx"], "flow='xx' is not valid"),
    (["train", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    (["train", "{cfg}", "--flow", "gx"], "flow='gx' is not valid"),
    (["train", "{cfg}", "--overlay", "none.yaml"], "config file 'none.yaml' does not exist"),
    (["train", "{cfg}", "--set", "optm.lr=1"], "unknown configuration section 'optm'"),
    (["sample", "nope.pt", "--n", "4", "--out", "x.png"], "checkpoint 'nope.pt' does not exist"),
    (["sample", "nope.pt", "--n", "4", "--out", "x.jpg"], "must end with .png or .npz"),
    (["evaluate", "nope.pt", "--metric", "fidd"], "metric='fidd' is not valid"),
])
def test_bad_input_one_line_nonzero(tmp_path, capsys, monkeypatch, argv, pattern):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("name: x\n")
    (tmp_path / "flows").mkdir()       # a flows/ folder beside the file: its overlays, not gclib's, are the ones used
    code = main([a.replace("{cfg}", "c.yaml") for a in argv])
    err = capsys.readouterr().err.strip()
    assert code != 0 and pattern in err and len(err.splitlines()) == 1


def test_train_composes_a_preset_with_a_flow_and_overlays(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "gc.yaml").write_text("flow: gc\nmu: 0.5\npredictor: ema\n")
    (tmp_path / "p.yaml").write_text(
        "run:\n  name: p_{flow}\n  progress: false\n  checkpoint_every: 0\n"
        "data: {dataset: 8gaussians, num_data: 64}\nnetwork: {hidden: 8, depth: 1, emb_dim: 8}\n"
        "loss: {sigma_max: 5.0, s0: 2, s1: 4, distance: l2}\noptim: {optimizer: adam, batch_size: 16, total_steps: 2}\n"
        "flows:\n  gc: {mu: 0.25}\n")
    (tmp_path / "more.yaml").write_text("optim: {lr: 2.0e-3}\n")
    assert main(["train", "p.yaml", "--flow", "gc", "--overlay", "more.yaml", "--set", "coupling.predict_all=true",
                 "--run-dir", "run"]) == 0
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (cfg["name"], cfg["flow"], cfg["mu"], cfg["lr"], cfg["predict_all"]) == ("p_gc", "gc", 0.25, 2e-3, True)
    # --fresh against resume: true written in a section of an overlay
    (tmp_path / "resume.yaml").write_text("run: {resume: true}\n")
    assert main(["train", "p.yaml", "--overlay", "resume.yaml", "--fresh"]) != 0
    assert "conflicts with resume: true in p.yaml or its overlays" in capsys.readouterr().err


def test_help_and_module_entry(tmp_path):
    r = run(["train", "--help"], tmp_path)
    assert r.returncode == 0 and "--set" in r.stdout and "KEY=VALUE" in r.stdout
    for sub in ("sample", "evaluate"):
        with pytest.raises(SystemExit) as e:
            main([sub, "--help"])
        assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        main(["train"])  # missing CONFIG: argparse exits 2
    assert e.value.code == 2
