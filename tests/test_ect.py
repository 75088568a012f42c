"""ECT (Table 2): continuous-time pairs shrinking with training, denoising pre-training with the same network,
fine-tuning from a checkpoint with GC (mu = 0.3), end to end on digits."""
import math

import pandas as pd
import pytest
import torch

from gclib.checkpoint import CheckpointError
from gclib.schedules import denoising_sigmas, denoising_weights, ect_pairs
from gclib.train import train


def test_ect_pairs_follow_their_closed_form_and_shrink_by_q_per_stage():
    g = torch.Generator().manual_seed(0)
    r0, t0 = ect_pairs(4096, step=0, total_steps=800, generator=torch.Generator().manual_seed(0))
    z = torch.randn(4096, generator=g, dtype=torch.float64)
    t = torch.exp(-1.1 + 2.0 * z).clamp(0.004, 80.0)
    assert torch.equal(t, t0)
    assert torch.all(r0 == 0.002)  # stage 0: n(t) >= 1, the pair spans all of t (denoising)
    for stage in range(1, 8):
        r, t = ect_pairs(4096, step=100 * stage, total_steps=800, generator=torch.Generator().manual_seed(0))
        n = 1 + 8 * torch.sigmoid(-t)
        expect = (t * (1 - n / 2 ** stage)).clamp(min=0.002)
        assert torch.allclose(r, expect) and torch.all(r < t) and torch.all(r >= 0.002)
    big = t > 5  # where r is not clipped the gap is t n(t) / q^a
    assert torch.allclose((t - r)[big], (t * (1 + 8 * torch.sigmoid(-t)) / 2 ** 7)[big])


def test_denoising_levels_and_weights():
    s = denoising_sigmas(10_000, torch.Generator().manual_seed(1), 0.002, 80.0)
    assert s.min() >= 0.002 and s.max() <= 80.0
    assert abs(float(torch.log(s).median()) + 1.1) < 0.1
    sig = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    assert torch.allclose(denoising_weights(sig, 0.5), (sig ** 2 + 0.25) / (sig * 0.5) ** 2)
    assert math.isclose(float(denoising_weights(torch.tensor(0.5), 0.5)), 8.0)


def digits(tmp_path, **kw):
    cfg = dict(name="ect", dataset="digits", model="unet", channels=8, channel_mult=[1, 2], num_blocks=1,
               distance="pseudo_huber", optimizer="adam", lr=1e-3, batch_size=16, total_steps=8, checkpoint_every=4,
               progress=False, runs_dir=str(tmp_path / "runs"), device="cpu")
    cfg.update(kw)
    return cfg


def test_denoising_pretraining_then_ect_finetune_with_gc(tmp_path):
    pre = train(digits(tmp_path, name="pre", objective="denoising"))
    assert pd.read_csv(pre.metrics_csv)["loss"].notna().all()
    init = torch.load(pre.checkpoint, weights_only=True)["ema"]
    ft = digits(tmp_path, name="ft", schedule="ect", flow="gc", mu=0.3, init_checkpoint=str(pre.checkpoint),
                total_steps=16)
    res = train(ft)
    log = pd.read_csv(res.metrics_csv)
    assert len(log) == 16 and log["loss"].notna().all() and 0 < log["gc_fraction"].mean() < 1
    # the fine-tune started from the pre-trained weights: one step of it (lr 0) keeps them
    zero = train(dict(ft, name="ft0", lr=1e-12, total_steps=1))
    w = torch.load(zero.checkpoint, weights_only=True)["model"]
    assert all(torch.allclose(w[k], init[k], atol=1e-6) for k in init)
    with pytest.raises(CheckpointError, match="do not fit"):
        train(digits(tmp_path, name="bad", channels=16, init_checkpoint=str(pre.checkpoint)))


def test_denoising_needs_the_independent_coupling(tmp_path):
    with pytest.raises(ValueError, match="objective='denoising'"):
        train(digits(tmp_path, objective="denoising", flow="gc"))
