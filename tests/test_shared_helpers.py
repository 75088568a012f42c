"""One implementation each (issue 21): paired verdicts through interval_verdict, one image-grid builder for the
training PNGs and the FID-curve sample figure, the digits classifier chosen by the data-set registry's metric, and
the FID-curve sweep's couplings as a parameter (flows=) whose default is the former IC / GC(mu) / OT list."""
import math

import numpy as np
import pytest
import torch

from gclib.couplings import Coupling, Pairs, register_coupling, unregister_coupling
from gclib.data import DataSet, register_dataset, unregister_dataset
from gclib.experiments import fid_curves as fc
from gclib.experiments.common import interval_verdict, paired_verdict
from gclib.images import image_grid, save_samples


# --------------------------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize("a, b, expect, verdict", [
    ([1.0, 1.1, 0.9, 1.05], [2.0, 2.1, 2.0, 1.9], "less", "holds"),
    ([1.0, 1.1, 0.9, 1.05], [2.0, 2.1, 2.0, 1.9], "greater", "refuted"),
    ([1.0, 2.0, 0.5], [1.2, 1.5, 0.6], "less", "inconclusive"),
    ([3.0, 3.0], [2.0, 2.0], "greater", "holds"),         # sd 0: the interval is the point 1
    ([1.0, float("nan"), 2.0], [0.0, 0.0, 0.0], "greater", "inconclusive"),
    ([1.0], [0.0], "greater", "inconclusive"),            # one seed
])
def test_paired_verdict_is_interval_verdict_of_its_interval(a, b, expect, verdict):
    v = paired_verdict(a, b, expect)
    assert v.verdict == verdict
    if v.n >= 2:
        assert v.verdict == interval_verdict(v.lo, v.hi, expect)


def test_paired_verdicts_on_random_pairs_match_the_interval_rule():
    rng = np.random.default_rng(1)
    seen = set()
    for i in range(400):
        n = int(rng.integers(2, 7))
        a, b = rng.normal(size=n), rng.normal(size=n) + rng.choice([-1.5, 0.0, 1.5])
        v = paired_verdict(a, b, ["less", "greater"][i % 2], 0.9)
        below, above = v.hi < 0, v.lo > 0    # the rule written out: the interval on one side of 0
        want = ("holds" if (below and v.expect == "less") or (above and v.expect == "greater") else
                "refuted" if below or above else "inconclusive")
        assert v.verdict == want
        seen.add(want)
    assert seen == {"holds", "refuted", "inconclusive"}


# --------------------------------------------------------------------------------------------- image grid
@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (5, 3, 6, 7), (16, 1, 8, 8), (17, 3, 5, 5)])
def test_image_grid_with_border_is_torchvisions_layout(shape):
    tv = pytest.importorskip("torchvision.utils")
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(shape[0]))
    x = x.expand(-1, 3, -1, -1)   # make_grid shows one channel as RGB
    nrow = math.ceil(math.sqrt(shape[0]))
    assert torch.equal(image_grid(x), tv.make_grid(x, nrow=nrow, padding=2, pad_value=0.0))
    assert torch.equal(image_grid(x, nrow=3, padding=1, pad_value=0.5), tv.make_grid(x, nrow=3, padding=1,
                                                                                     pad_value=0.5))


def test_image_grid_without_border_pads_after_each_tile():
    x = torch.arange(5 * 1 * 2 * 2, dtype=torch.float32).reshape(5, 1, 2, 2)
    g = image_grid(x, nrow=3, rows=3, padding=1, pad_value=-1.0, border=False)
    assert g.shape == (1, 9, 9)
    for k in range(5):
        i, j = divmod(k, 3)
        assert torch.equal(g[:, 3 * i:3 * i + 2, 3 * j:3 * j + 2], x[k])
    assert (g[:, 6:, :] == -1).all() and (g[:, 2, :] == -1).all() and (g[:, :, 8] == -1).all()


def test_sample_pngs_show_the_grid_in_8_bits(tmp_path):
    image = pytest.importorskip("PIL.Image")
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = save_samples(x, tmp_path / "s.png")
    got = np.asarray(image.open(path))
    want = image_grid(((x + 1) / 2).expand(-1, 3, -1, -1)).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    assert got.shape == (14, 20, 3) and (got == want.permute(1, 2, 0).numpy()).all()
    one = np.asarray(image.open(save_samples(x[:1], tmp_path / "one.png")))
    assert one.shape == (4, 4, 3)   # a single image: no border


# --------------------------------------------------------------------------------------------- the digits metric
def test_digits_classifier_is_chosen_by_the_registrys_metric():
    assert fc.uses_digits_classifier("digits")
    assert not fc.uses_digits_classifier("two_gaussians") and not fc.uses_digits_classifier("cifar10")
    register_dataset(DataSet("digits_like", lambda root, download, n, seed: torch.zeros(4, 1, 8, 8), (1, 8, 8),
                             model="unet", metric="fd_digits"))
    try:
        assert fc.uses_digits_classifier("digits_like")   # by its metric, not by its name
    finally:
        unregister_dataset("digits_like")


# --------------------------------------------------------------------------------------------- sweep flows
def _rows(runs):
    return [(r.label, r.seed, r.overrides, r.family) for r in runs]


def test_sweep_runs_default_flows_are_the_former_list():
    frozen = {"strong": "/x/s.pt"}
    per_flow = {"gc": {"dropout": 0.0}}
    runs = fc.sweep_runs([0, 1], [0.5, 1.0], True, 0.7, frozen, per_flow)
    assert _rows(runs)[:5] == [
        ("IC", 0, {"flow": "ic"}, "mu"),
        ("GC mu=0.5", 0, {"flow": "gc", "mu": 0.5, "predictor": "ema", "dropout": 0.0}, "mu"),
        ("GC mu=1", 0, {"flow": "gc", "mu": 1.0, "predictor": "ema", "dropout": 0.0}, "mu"),
        ("OT", 0, {"flow": "ot"}, "flow"),
        ("GC frozen strong", 0, {"flow": "gc", "mu": 0.7, "predictor": "/x/s.pt", "dropout": 0.0}, "frozen")]
    assert len(runs) == 10 and _rows(runs[5:]) == [(l, 1, o, f) for l, _, o, f in _rows(runs[:5])]
    assert _rows(runs) == _rows(fc.sweep_runs([0, 1], [0.5, 1.0], False, 0.7, frozen, per_flow,
                                              flows=("ic", "gc", "ot")))
    no_ot = fc.sweep_runs([0], [0.5], include_ot=False)
    assert _rows(no_ot) == _rows(fc.sweep_runs([0], [0.5], flows=["ic", "gc"]))
    assert [r.label for r in no_ot] == ["IC", "GC mu=0.5"]


class _Reversed(Coupling):
    def pair(self, x, z, **_):
        return Pairs(x, z.flip(0), torch.zeros(x.shape[0], dtype=torch.bool))


def test_sweep_runs_take_any_registered_coupling():
    register_coupling("reversed", _Reversed)
    try:
        runs = fc.sweep_runs([3], [0.5], flows=("ic", "reversed", "ot"), per_flow={"reversed": {"lr": 1e-4}})
        assert _rows(runs) == [("IC", 3, {"flow": "ic"}, "mu"), ("reversed", 3, {"flow": "reversed", "lr": 1e-4}, "flow"),
                               ("OT", 3, {"flow": "ot"}, "flow")]
    finally:
        unregister_coupling("reversed")
    with pytest.raises(ValueError, match="reversed"):
        fc.sweep_runs([0], [0.5], flows=("ic", "reversed"))
    with pytest.raises(ValueError, match="twice"):
        fc.sweep_runs([0], [0.5], flows=("ic", "ot", "ot"))
