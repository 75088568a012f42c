"""Every bad input through the command line and papermill: one line naming the problem, a non-zero exit status,
nothing accepted silently (issue: 'nothing lost, nothing shared by accident')."""
import os
from pathlib import Path

import pytest
import torch
import yaml

from gclib.cli import main
from gclib.rundir import RunLock
from gclib.train import train
from nbhelpers import assert_fails_clearly

GOOD = dict(name="bad", dataset="8gaussians", num_data=128, model="mlp", hidden=8, depth=1, emb_dim=8, sigma_max=5.0,
            s0=2, s1=4, distance="l2", optimizer="adam", lr=1e-3, batch_size=16, total_steps=4, checkpoint_every=2,
            progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("trained")
    res = train({**GOOD, "run_dir": str(d / "run")})
    ckpt = Path(res.checkpoint)
    corrupt = d / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all" * 10)
    truncated = d / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:2000])
    foreign = d / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    mismatched = d / "mismatched.pt"
    blob = torch.load(ckpt, weights_only=True)
    blob["config"] = {**blob["config"], "hidden": 32}  # the weights were trained with hidden=8
    torch.save(blob, mismatched)
    return {"ckpt": str(ckpt), "corrupt": str(corrupt), "truncated": str(truncated), "foreign": str(foreign),
            "mismatched": str(mismatched), "run": str(d / "run")}


def cfg_file(tmp_path, text=None, **changes):
    p = tmp_path / "c.yaml"
    p.write_text(text if text is not None else yaml.safe_dump({**GOOD, "run_dir": str(tmp_path / "run"), **changes}))
    return str(p)


# (argv builder, keyword in the one line, exit status)
CASES = {
    "lr=inf": (lambda t, k: ["train", cfg_file(t), "--set", "lr=inf"], "lr", 2),
    "sigma_max=inf": (lambda t, k: ["train", cfg_file(t), "--set", "sigma_max=inf"], "sigma_max", 2),
    "weight_decay=inf": (lambda t, k: ["train", cfg_file(t), "--set", "weight_decay=inf"], "weight_decay", 2),
    "p_mean=nan": (lambda t, k: ["train", cfg_file(t), "--set", "p_mean=nan"], "p_mean", 2),
    "p_std=0": (lambda t, k: ["train", cfg_file(t), "--set", "p_std=0"], "p_std", 2),
    "seed=1e30": (lambda t, k: ["train", cfg_file(t), "--set", "seed=1e30"], "seed", 2),
    "seed=-1": (lambda t, k: ["train", cfg_file(t), "--set", "seed=-1"], "seed", 2),
    "empty config": (lambda t, k: ["train", cfg_file(t, "")], "empty", 2),
    "comment-only config": (lambda t, k: ["train", cfg_file(t, "# nothing here\n")], "empty", 2),
    "duplicate keys": (lambda t, k: ["train", cfg_file(t, "lr: 1.0e-3\nlr: 2.0e-3\n")], "lr", 2),
    "name=../..": (lambda t, k: ["train", cfg_file(t), "--set", "name=../.."], "name", 2),
    "name with slash": (lambda t, k: ["train", cfg_file(t), "--set", "name=a/b"], "name", 2),
    "eval_metrics=[foo]": (lambda t, k: ["train", cfg_file(t), "--set", "eval_metrics=[foo]"], "eval_metrics", 2),
    "unknown flow": (lambda t, k: ["train", cfg_file(t), "--set", "flow=xx"], "flow", 2),
    "mu outside [0, 1]": (lambda t, k: ["train", cfg_file(t), "--set", "mu=1.5"], "mu", 2),
    "unknown key": (lambda t, k: ["train", cfg_file(t), "--set", "lerning_rate=1"], "lerning_rate", 2),
    "--set without =": (lambda t, k: ["train", cfg_file(t), "--set", "lr"], "key=value", 2),
    "missing config": (lambda t, k: ["train", str(t / "missing.yaml")], "missing.yaml", 2),
    "config is a folder": (lambda t, k: ["train", str(t)], "config", 2),
    "invalid YAML": (lambda t, k: ["train", cfg_file(t, "lr: [1, 2\n")], "YAML", 2),
    "config not a mapping": (lambda t, k: ["train", cfg_file(t, "- 1\n- 2\n")], "mapping", 2),
    "batch_size=0": (lambda t, k: ["train", cfg_file(t), "--set", "batch_size=0"], "batch_size", 2),
    "total_steps=-1": (lambda t, k: ["train", cfg_file(t), "--set", "total_steps=-1"], "total_steps", 2),
    "lr as text": (lambda t, k: ["train", cfg_file(t), "--set", "lr=fast"], "lr", 2),
    "optimizer=sgd": (lambda t, k: ["train", cfg_file(t), "--set", "optimizer=sgd"], "optimizer", 2),
    "device=tpu": (lambda t, k: ["train", cfg_file(t), "--set", "device=tpu"], "device", 2),
    "ema_decay=1.5": (lambda t, k: ["train", cfg_file(t), "--set", "ema_decay=1.5"], "ema_decay", 2),
    "dropout=1": (lambda t, k: ["train", cfg_file(t), "--set", "dropout=1"], "dropout", 2),
    "cifar10 offline": (lambda t, k: ["train", cfg_file(t, dataset="cifar10", model="unet_cifar10",
                                                       data_root=str(t / "data"))], "cifar-10-batches-py", 2),
    "model for other images": (lambda t, k: ["train", cfg_file(t, dataset="digits", model="unet_cifar10")],
                               "unet_cifar10", 2),
    "missing predictor": (lambda t, k: ["train", cfg_file(t, flow="gc", predictor=str(t / "nope.pt"))],
                          "predictor", 2),
    "corrupt predictor": (lambda t, k: ["train", cfg_file(t, flow="gc", predictor=k["corrupt"])], "corrupt", 2),
    "mismatched predictor": (lambda t, k: ["train", cfg_file(t, flow="gc", predictor=k["mismatched"])],
                             "do not fit", 2),
    "another configuration's checkpoint": (lambda t, k: ["train", cfg_file(t, run_dir=k["run"], lr=5e-3)],
                                           "another configuration", 2),
    "sample: missing checkpoint": (lambda t, k: ["sample", str(t / "nope.pt"), "--out", str(t / "s.png")],
                                   "does not exist", 2),
    "sample: corrupt checkpoint": (lambda t, k: ["sample", k["corrupt"], "--out", str(t / "s.png")], "corrupt", 2),
    "sample: truncated checkpoint": (lambda t, k: ["sample", k["truncated"], "--out", str(t / "s.png")],
                                     "truncated", 2),
    "sample: not a gclib checkpoint": (lambda t, k: ["sample", k["foreign"], "--out", str(t / "s.png")],
                                       "not a gclib checkpoint", 2),
    "sample: weights of another model": (lambda t, k: ["sample", k["mismatched"], "--out", str(t / "s.png")],
                                         "do not fit", 2),
    "sample: bad --out": (lambda t, k: ["sample", k["ckpt"], "--out", str(t / "s.jpg")], ".png or .npz", 2),
    "sample: --n 0": (lambda t, k: ["sample", k["ckpt"], "--n", "0", "--out", str(t / "s.png")], "--n", 2),
    "sample: --steps 0": (lambda t, k: ["sample", k["ckpt"], "--steps", "0", "--out", str(t / "s.png")], "--steps", 2),
    "sample: --out in a missing folder": (lambda t, k: ["sample", k["ckpt"], "--out", str(t / "no" / "s.npz")],
                                          "s.npz", 2),
    "evaluate: unknown metric": (lambda t, k: ["evaluate", k["ckpt"], "--metric", "foo"], "metric='foo'", 2),
    "evaluate: a function that is no metric": (lambda t, k: ["evaluate", k["ckpt"], "--metric", "frechet_distance"],
                                               "frechet_distance", 2),
    "evaluate: corrupt checkpoint": (lambda t, k: ["evaluate", k["corrupt"], "--metric", "w2"], "corrupt", 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_the_problem(case, tmp_path, trained, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build, keyword, status = CASES[case]
    argv = build(tmp_path, trained)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == status, (case, code, err)
    assert len(err.splitlines()) == 1 and keyword in err, (case, err)
    assert "Traceback" not in err


def test_locked_run_is_one_line(tmp_path, capsys):
    with RunLock(tmp_path / "run"):
        assert main(["train", cfg_file(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "being trained by another process" in err and str(os.getpid()) in err


def test_an_internal_bug_still_shows_its_traceback(tmp_path, monkeypatch):
    import gclib.train as gt
    monkeypatch.setattr(gt, "_train_step", lambda *a, **k: (_ for _ in ()).throw(TypeError("bug")))
    with pytest.raises(TypeError, match="bug"):
        main(["train", cfg_file(tmp_path)])


@pytest.mark.parametrize("params, message", [
    (dict(flwo="gc"), "unknown parameter 'flwo'"),
    (dict(workers="abc"), "parameter workers='abc' has the wrong type"),
    (dict(seeds="0,1"), "parameter seeds='0,1' has the wrong type"),
])
def test_papermill_parameters_are_checked(tmp_path, params, message):
    assert_fails_clearly("fid_curves", tmp_path / "bad.ipynb", message, **params)
