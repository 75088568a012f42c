"""ECT (Table 2): continuous-time pairs shrinking with training, denoising pre-training with the same network,
fine-tuning from a checkpoint with GC (mu = 0.3), end to end on digits."""
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from gclib import schedules as S
from gclib.checkpoint import CheckpointError
from gclib.config import ConfigError, config_hash, load_config
from gclib.couplings import couple
from gclib.losses import get_distance
from gclib.nets import MLP
from gclib.precond import ConsistencyModel
from gclib.schedules import denoising_sigmas, denoising_weights, ect_pairs
from gclib.step import data_at_level_zero, step_loss
from gclib.train import train

PARAMS = Path(__file__).resolve().parents[1] / "params" / "train"


def _ect_reference(t: float, iteration: int, total: int, stages: int = 8, q: float = 2.0, k: float = 8.0,
                   b: float = 1.0) -> float:
    """ECT's mapping (Geng et al. 2024, locuslab/ect), written out from the paper's formula for one t:
    stage = floor(iteration / (total / stages)), r = t (1 - n(t) / q^(stage + 1)), n(t) = 1 + k sigmoid(-b t),
    r < 0 -> 0."""
    stage = math.floor(iteration / (total / stages))
    n = 1.0 + k / (1.0 + math.exp(b * t))
    return max(t * (1.0 - n / q ** (stage + 1)), 0.0)


@pytest.mark.parametrize("total", [800, 1000])
def test_ect_pairs_match_ects_formula(total):
    """The default pairs are ECT's: every (t, r) against the formula computed row by row in plain floats."""
    for it in (0, total // 8 - 1, total // 8, total // 2 + 3, total - 1):
        r, t = ect_pairs(512, step=it, total_steps=total, generator=torch.Generator().manual_seed(it))
        z = torch.randn(512, generator=torch.Generator().manual_seed(it), dtype=torch.float64).tolist()
        t_ref = [min(max(math.exp(-1.1 + 2.0 * v), 0.004), 80.0) for v in z]  # gclib clips t to [2 sigma_min, sigma_max]
        assert t.tolist() == pytest.approx(t_ref, rel=1e-12)
        r_ref = [_ect_reference(tv, it, total) for tv in t.tolist()]
        assert r.tolist() == pytest.approx(r_ref, rel=1e-9, abs=1e-12)
        assert torch.all(r >= 0) and torch.all(r < t)
    # stage 0 is not pure denoising: for large t the gap is t n(t) / 2, so r = t / 2 there, not sigma_min
    r, t = ect_pairs(4096, step=0, total_steps=total, generator=torch.Generator().manual_seed(0))
    big = t > 20
    assert big.any() and torch.allclose(r[big], t[big] * (1 - (1 + 8 * torch.sigmoid(-t[big])) / 2))
    assert bool((r == 0).any()) and bool((r > 0.1).any())  # small t: clipped at 0; large t: a real pair
    # the last stage's gap is ECT's t n(t) / q^8 (gclib's earlier choice left it at twice that)
    r, t = ect_pairs(4096, step=total - 1, total_steps=total, generator=torch.Generator().manual_seed(0))
    pos = r > 0
    assert torch.allclose((t - r)[pos], (t * (1 + 8 * torch.sigmoid(-t)) / 2 ** 8)[pos])
    assert S.ect_stage(total - 1, total) == 7 and S.ect_stage(total // 8, total) == 1


def test_gclibs_earlier_pairs_stay_reachable():
    """stage_offset=0, r_floor=sigma_min: gclib's earlier schedule (stage 0 pure denoising, one stage behind)."""
    g = torch.Generator().manual_seed(0)
    r0, t0 = ect_pairs(4096, step=0, total_steps=800, generator=torch.Generator().manual_seed(0), stage_offset=0,
                       r_floor=0.002)
    z = torch.randn(4096, generator=g, dtype=torch.float64)
    t = torch.exp(-1.1 + 2.0 * z).clamp(0.004, 80.0)
    assert torch.equal(t, t0)
    assert torch.all(r0 == 0.002)  # stage 0: n(t) >= 1, the pair spans all of t (denoising)
    for stage in range(1, 8):
        r, t = ect_pairs(4096, step=100 * stage, total_steps=800, generator=torch.Generator().manual_seed(0),
                         stage_offset=0, r_floor=0.002)
        n = 1 + 8 * torch.sigmoid(-t)
        expect = (t * (1 - n / 2 ** stage)).clamp(min=0.002)
        assert torch.allclose(r, expect) and torch.all(r < t) and torch.all(r >= 0.002)
    big = t > 5  # where r is not clipped the gap is t n(t) / q^a
    assert torch.allclose((t - r)[big], (t * (1 + 8 * torch.sigmoid(-t)) / 2 ** 7)[big])


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return ConsistencyModel(MLP(dim=2, hidden=16, depth=1, emb_dim=8), sigma_min=0.002, sigma_max=80.0)


def test_rows_at_r_zero_take_the_data_as_target_with_ects_distance():
    """ECT's loss: ||f(x + t z, t) - target||_2 / (t - r), the target f(x + r z, r) for r > 0 and x for r = 0."""
    model = _tiny_model()
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(2))
    hi = torch.tensor([0.5, 1.0, 2.0, 3.0, 10.0, 40.0], dtype=torch.float64)
    lo = torch.tensor([0.0, 0.3, 0.0, 1.5, 0.0, 30.0], dtype=torch.float64)
    loss, res = step_loss(model, x, torch.tensor([0.002, 80.0]), flow="ic", distance="l2_norm", z=z,
                          sigma_pairs=(lo, hi))
    with torch.no_grad():
        t, r = hi.float(), lo.float()
        pred = model(x + t[:, None] * z, t)
        target = torch.stack([x[i] if r[i] == 0 else model(x[i:i + 1] + r[i] * z[i:i + 1], r[i:i + 1])[0]
                              for i in range(6)])
        ref = ((pred - target).pow(2).sum(1).sqrt() / (t - r)).mean()
    assert torch.isfinite(loss) and torch.allclose(loss, ref, rtol=1e-5)
    assert torch.equal(res.sigma_lo, lo.float())
    loss.backward()  # finite gradients although the network never sees level 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_data_at_level_zero_keeps_x_exactly_and_the_rest_unchanged():
    model = _tiny_model()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(3))
    s = torch.tensor([0.0, 0.7, 0.0, 5.0, 20.0])
    with torch.no_grad():
        out = data_at_level_zero(model, 0.002)(x, s)
        assert torch.equal(out[[0, 2]], x[[0, 2]])
        assert torch.equal(out[[1, 3, 4]], model(x, s.clamp(min=0.002))[[1, 3, 4]])
        assert torch.equal(data_at_level_zero(model)(x, s + 1), model(x, s + 1))


def test_l2_norm_distance_is_the_euclidean_norm_with_a_zero_gradient_at_zero():
    a = torch.tensor([[3.0, 4.0], [1.0, 1.0]], requires_grad=True)
    b = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    d = get_distance("l2_norm")(a, b)
    assert d.tolist() == [5.0, 0.0]
    d.sum().backward()
    assert torch.allclose(a.grad, torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


@pytest.mark.parametrize("predict_all", [False, True])
def test_gc_rows_at_level_zero_keep_their_data_endpoint(predict_all):
    seen = []

    def predictor(xn, s):
        seen.append(s.clone())
        return torch.full_like(xn, 7.0)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.0, 1.0, 0.0, 2.0])
    c = couple("gc", x, z, sigma=sigma, mu=1.0, predictor=predictor, predict_all=predict_all)
    assert c.gc_mask.all()
    assert torch.equal(c.x[[0, 2]], x[[0, 2]]) and torch.all(c.x[[1, 3]] == 7.0)
    assert all(bool((s > 0).all()) for s in seen)  # the predictor never ran at level 0
    if not predict_all:
        assert seen[0].tolist() == [1.0, 2.0]


def test_ect_options_hash():
    """ECT's choices are the defaults; gclib's earlier ones are named options that keep the old hashes; the
    ECT-only options never touch the hash of an iCT configuration."""
    old = dict(ect_stage_offset=0, ect_r_clip="sigma_min", ect_distance=None, train_boundary="shifted")
    gc = load_config(PARAMS / "cifar10_ect.yaml", old, flow="gc")
    ic = load_config(PARAMS / "cifar10_ect.yaml", old, flow="ic")
    assert config_hash(gc, 64) == "3841e89c73d201861621f43c278ba795425a0c230863846a004c111a828d4b8e"  # before
    assert config_hash(ic, 64) == "6312f478142e475cb663169b97924fe79e65fb3c4a1eb2c9a37cf8d3843aa8ea"  # the options
    assert config_hash(load_config(PARAMS / "cifar10_ect.yaml", flow="gc")) != config_hash(gc)  # ECT's own: another run
    for k, v in dict(ect_stage_offset=1, ect_r_clip="zero", ect_distance="l2_norm", train_boundary="edm").items():
        assert config_hash(gc.replace(**{k: v})) != config_hash(gc)  # each option alone changes the run
    ict = load_config(PARAMS / "toy.yaml")
    assert all(config_hash(ict.replace(**{k: v})) == config_hash(ict) for k, v in old.items())
    with pytest.raises(ConfigError, match="ect_r_clip"):
        ict.replace(ect_r_clip="one")
    with pytest.raises(ConfigError, match="ect_stage_offset"):
        ict.replace(ect_stage_offset=2)


def _closed_form(sigma: float, shifted: bool, sd: float = 0.5, smin: float = 0.002) -> tuple:
    """(c_skip, c_out) written out: gclib's shifted form (CM) or EDM's, as locuslab/ect's ECMPrecond trains."""
    d = sigma - smin if shifted else sigma
    return sd ** 2 / (d ** 2 + sd ** 2), sd * d / math.sqrt(sd ** 2 + sigma ** 2)


@pytest.mark.parametrize("boundary", ["shifted", "edm"])
def test_both_network_forms_are_their_closed_forms_in_each_mode(boundary):
    """train_boundary 'edm' trains with EDM's c_skip / c_out (no sigma_min shift) and samples with the shifted form,
    as ECT's ECMPrecond (`if self.training`); 'shifted' (gclib's) uses the shifted form in both modes."""
    torch.manual_seed(0)
    m = ConsistencyModel(MLP(dim=2, hidden=16, depth=1, emb_dim=8), sigma_min=0.002, sigma_max=80.0,
                         train_boundary=boundary).double()
    sig = torch.tensor([0.002, 0.01, 0.5, 1.0, 80.0], dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64)
    for mode in ("train", "eval"):
        getattr(m, mode)()
        shifted = boundary == "shifted" or mode == "eval"
        c_skip, c_out, c_in, c_noise = m.coefficients(sig)
        for k, s in enumerate(sig.tolist()):
            skip, out = _closed_form(s, shifted)
            assert math.isclose(c_skip[k].item(), skip, rel_tol=1e-13), (mode, s)
            assert math.isclose(c_out[k].item(), out, rel_tol=1e-13, abs_tol=1e-16), (mode, s)
        with torch.no_grad():                      # the forward pass is built on them
            F = m.net(c_in[:, None] * x, c_noise)
            assert torch.allclose(m(x, sig), c_skip[:, None] * x + c_out[:, None] * F, rtol=0, atol=1e-12)
            at_min = m(x, 0.002)
        # the boundary f(x, sigma_min) = x holds exactly in the shifted form only; EDM's holds at sigma = 0
        assert torch.equal(at_min, x) == shifted, mode
    c_skip0, c_out0, _, _ = m.coefficients(torch.zeros(1, dtype=torch.float64), shifted=False)
    assert (c_skip0.item(), c_out0.item()) == (1.0, 0.0)
    with pytest.raises(ValueError, match="train_boundary='ect' is not valid; allowed values: 'shifted', 'edm'"):
        ConsistencyModel(MLP(dim=2), train_boundary="ect")
    with pytest.raises(ConfigError, match="train_boundary='ect' is not valid"):
        load_config(PARAMS / "toy.yaml", {"train_boundary": "ect"})


def test_the_network_form_reaches_the_trained_model(tmp_path):
    """A run with train_boundary 'edm' builds its network in that form and trains other weights than the shifted
    form from the same draws; the loaded model samples with the shifted form (eval mode)."""
    from gclib.models import load_model
    base = dict(name="nf", dataset="two_gaussians", num_data=256, model="mlp", hidden=16, depth=1, emb_dim=8,
                sigma_max=5.0, schedule="ect", optimizer="adam", lr=1e-3, batch_size=32, total_steps=6, ema_every=1,
                checkpoint_every=0, progress=False, runs_dir=str(tmp_path / "runs"), device="cpu")
    runs = {b: train(dict(base, train_boundary=b)) for b in ("shifted", "edm")}
    weights = {b: torch.load(r.checkpoint, weights_only=True)["model"] for b, r in runs.items()}
    assert any(not torch.equal(weights["shifted"][k], weights["edm"][k]) for k in weights["shifted"])
    model, ema, cfg = load_model(runs["edm"].checkpoint)
    assert cfg.train_boundary == "edm" and model.train_boundary == ema.train_boundary == "edm"
    x = torch.randn(4, 2)
    assert torch.equal(ema(x, cfg.sigma_min), x)                 # eval mode: the shifted boundary


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
