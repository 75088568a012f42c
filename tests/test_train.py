"""Training loop: Lion, logs, checkpoints, exact resume after SIGKILL, corrupt checkpoints, NaN, hooks."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import gclib.train as gtrain
from gclib.checkpoint import list_checkpoints, newest_valid
from gclib.optim import Lion, make_optimizer
from gclib.step import NonFiniteLossError
from gclib.train import load_model, train
from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


tiny = tiny_config


def test_lion_matches_closed_form():
    torch.manual_seed(0)
    p0 = torch.randn(5)
    p = torch.nn.Parameter(p0.clone())
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    m = torch.zeros(5)
    ref = p0.clone()
    for g in (torch.randn(5), torch.randn(5), torch.randn(5)):
        p.grad = g.clone()
        opt.step()
        c = 0.9 * m + 0.1 * g
        ref = ref - 0.1 * (torch.sign(c) + 0.5 * ref)
        m = 0.99 * m + 0.01 * g
        assert torch.allclose(p.detach(), ref, atol=1e-6)
        assert torch.allclose(opt.state[p]["exp_avg"], m, atol=1e-7)
    assert isinstance(make_optimizer("radam", [p], 1e-3), torch.optim.RAdam)


def _state_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_train_logs_checkpoints_and_skips(tmp_path):
    calls = []
    res = train(tiny(tmp_path, flow="gc", mu=0.5), eval_fns=[lambda step, m: calls.append(step) or {"s": step}])
    df = pd.read_csv(res.metrics_csv)
    assert list(df.columns) == ["step", "loss", "num_points", "lr", "gc_fraction", "seconds", "samples_per_s"]
    assert df["step"].tolist() == list(range(1, 31)) and df["loss"].notna().all()
    assert df["num_points"].is_monotonic_increasing and df["num_points"].iloc[-1] == 9
    assert 0 < df["gc_fraction"].mean() < 1
    assert [p.name for p in list_checkpoints(res.run_dir / "checkpoints")] == ["ckpt-00000030.pt", "ckpt-00000020.pt"]
    assert calls == [30] and pd.read_csv(res.eval_csv)["s"].tolist() == [30]
    assert (res.run_dir / "samples" / "step-00000030.png").is_file()
    ckpt = torch.load(res.checkpoint, weights_only=True)
    assert {"model", "ema", "optimizer", "rng", "data", "config", "step"} <= set(ckpt)
    assert set(ckpt["rng"][0]) >= {"torch_cpu", "numpy", "python", "streams"}
    model, ema, cfg = load_model(res.checkpoint)
    assert cfg.flow == "gc" and _state_equal(ema.state_dict(), ckpt["ema"])
    assert ema(torch.zeros(3, 2), 5.0).shape == (3, 2)
    again = train(tiny(tmp_path, flow="gc", mu=0.5))
    assert again.skipped and again.checkpoint == res.checkpoint


def test_corrupt_checkpoint_falls_back_and_resume_is_exact(tmp_path):
    ref = train(tiny(tmp_path, run_dir=str(tmp_path / "ref"), flow="ot"))
    assert pd.read_csv(ref.metrics_csv)["ot_batch"].eq(32).all()
    res = train(tiny(tmp_path, run_dir=str(tmp_path / "run"), flow="ot", keep_checkpoints=3))
    (res.run_dir / "done.json").unlink()
    newest = res.run_dir / "checkpoints" / "ckpt-00000030.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    with pytest.warns(RuntimeWarning, match="ckpt-00000030.pt is corrupt or truncated"):
        path, ck = newest_valid(res.run_dir / "checkpoints")
    assert path.name == "ckpt-00000020.pt"
    with pytest.warns(RuntimeWarning, match="ckpt-00000030.pt"):
        again = train(tiny(tmp_path, run_dir=str(tmp_path / "run"), flow="ot", keep_checkpoints=3))
    assert not again.skipped
    a, b = torch.load(ref.checkpoint, weights_only=True), torch.load(again.checkpoint, weights_only=True)
    assert _state_equal(a["model"], b["model"]) and _state_equal(a["ema"], b["ema"])
    assert pd.read_csv(ref.metrics_csv)["loss"].tolist() == pd.read_csv(again.metrics_csv)["loss"].tolist()


def test_nan_loss_stops_naming_step_and_keeps_checkpoint(tmp_path, monkeypatch):
    real = gtrain.train_step

    def poisoned(model, opt, x, sigmas, *, step, **kw):
        if step == 14:  # the 15th step
            x = torch.full_like(x, float("nan"))
        return real(model, opt, x, sigmas, step=step, **kw)

    monkeypatch.setattr(gtrain, "train_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 15 .*last good checkpoint: .*ckpt-00000010.pt"):
        train(tiny(tmp_path))
    run = next((tmp_path / "runs").iterdir())
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["ckpt-00000010.pt"]
    assert not (run / "done.json").exists()


def test_gpu_flags_warn_on_cpu_and_unet_digits_grid(tmp_path):
    with pytest.warns(RuntimeWarning, match="bf16=true is a CUDA speed option"):
        res = train(tiny(tmp_path, dataset="digits", model="unet", channels=8, channel_mult=[1, 2], num_blocks=1,
                         distance="pseudo_huber", batch_size=8, total_steps=2, checkpoint_every=0, bf16=True,
                         device="cpu"))
    assert (res.run_dir / "samples" / "step-00000002.png").is_file()
    _, ema, _ = load_model(res.checkpoint)
    assert ema.data_shape == (1, 8, 8)


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    cfg = tiny(tmp_path, total_steps=200, checkpoint_every=20, keep_checkpoints=3, flow="gc", mu=0.5,
               predictor="online", run_dir=str(tmp_path / "killed"))
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "gclib", "train", str(cfg_file)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (ckpts / "ckpt-00000040.pt").exists():
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    killed_at = int(list_checkpoints(ckpts)[0].name[5:13])
    assert 40 <= killed_at < 200
    resumed = train(cfg)
    ref = train({**cfg, "run_dir": str(tmp_path / "ref")})
    a, b = torch.load(ref.checkpoint, weights_only=True), torch.load(resumed.checkpoint, weights_only=True)
    assert _state_equal(a["model"], b["model"]) and _state_equal(a["ema"], b["ema"])
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(_state_equal(sa[k], sb[k]) for k in sa)
    la, lb = pd.read_csv(ref.metrics_csv), pd.read_csv(resumed.metrics_csv)
    assert lb["step"].tolist() == list(range(1, 201))
    assert la["loss"].tolist() == lb["loss"].tolist() and la["gc_fraction"].tolist() == lb["gc_fraction"].tolist()
