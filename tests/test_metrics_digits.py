"""The digits feature space (gclib.metrics.digits) and KID: accuracy of the classifier, shapes, the ranking of
degraded sets that pixel W2 gets wrong, and KID against its closed form."""
import math

import pytest
import torch

from gclib.experiments.fid_curves import digits_metric_check
from gclib.metrics import digits_features, fd_digits, kid, kid_digits, mmd2_unbiased
from gclib.metrics.digits import (MIN_ACCURACY, WEIGHTS_PATH, WEIGHTS_SHA256, DigitsWeightsError, _sha256, accuracy,
                                  digits_split, load_classifier)


@pytest.fixture(scope="module")
def check():
    return digits_metric_check().set_index("set")


def test_classifier_is_accurate_and_features_are_frozen():
    ex = digits_features()
    assert ex.accuracy >= MIN_ACCURACY
    x = torch.rand(5, 1, 8, 8) * 4 - 2  # out of range values are clipped like the FID protocol clips samples
    f = ex(x)
    assert f.shape == (5, 128) and f.dtype == torch.float64
    assert torch.equal(f, ex(x.clamp(-1, 1)))
    assert not any(p.requires_grad for p in ex.parameters())
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        ex(torch.zeros(2, 64))


def test_shipped_weights_are_the_frozen_classifier():
    # FD_digits is one function everywhere: the weights ship with gclib and are checked on every load
    assert _sha256(WEIGHTS_PATH) == WEIGHTS_SHA256
    net, recorded = load_classifier()
    x_tr, y_tr, x_te, y_te = digits_split()
    assert accuracy(net, x_te, y_te) == recorded >= MIN_ACCURACY  # held-out accuracy, recomputed here


def test_committed_metric_check_is_what_this_machine_computes(check):
    # one FD_digits everywhere: the committed metric_check of make reproduce's digits profile is reproduced by the
    # shipped classifier (to floating-point noise of the matrix square root), so the committed curves stay valid
    import pandas as pd
    from nbhelpers import ROOT
    committed = pd.read_csv(ROOT / "results" / "fid_curves" / "cpu_digits" / "metric_check.csv").set_index("set")
    assert list(committed.index) == list(check.index)
    for col in ("fd_digits", "kid_digits", "pixel_w2"):
        assert check[col].to_numpy() == pytest.approx(committed[col].to_numpy(), rel=1e-9, abs=1e-9), col


def test_tampered_or_missing_weights_are_refused(tmp_path):
    bad = tmp_path / "w.pt"
    blob = bytearray(WEIGHTS_PATH.read_bytes())
    blob[-100] ^= 1
    bad.write_bytes(bytes(blob))
    with pytest.raises(DigitsWeightsError, match="SHA-256"):
        load_classifier(bad)
    with pytest.raises(DigitsWeightsError, match="missing"):
        load_classifier(tmp_path / "absent.pt")


def test_fd_digits_ranks_real_digits_best(check):
    real = check.loc["held-out real digits", "fd_digits"]
    for name in ("Gaussian fitted to the data", "3x3 box blur", "shrunk 0.7x toward the mean", "classes 0, 1, 2 removed"):
        assert check.loc[name, "fd_digits"] > 3 * real, name
        assert check.loc[name, "kid_digits"] > 3 * check.loc["held-out real digits", "kid_digits"], name


def test_pixel_w2_is_fooled_by_shrinkage(check):
    # why FD_digits replaced pixel W2: shrunk digits score better than fresh real ones in pixel space
    assert check.loc["shrunk 0.7x toward the mean", "pixel_w2"] < check.loc["held-out real digits", "pixel_w2"]


def test_fd_digits_of_a_set_with_itself_is_zero():
    x = digits_split()[2]
    assert abs(fd_digits(x, x)) < 1e-6


def test_mmd2_unbiased_equals_the_u_statistic():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, generator=g, dtype=torch.float64)
    b = torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.5
    k = lambda x, y: (float(x @ y) / 3 + 1) ** 3
    xx = sum(k(a[i], a[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(b[i], b[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(a[i], b[j]) for i in range(6) for j in range(5)) / 30
    assert math.isclose(mmd2_unbiased(a, b), xx + yy - 2 * xy, rel_tol=1e-9)


def _moments(m, s):
    return m, m * m + s * s, m ** 3 + 3 * m * s * s


def test_kid_matches_closed_form_on_gaussians():
    # 1-D features, k(x, y) = (x y + 1)^3: E k = E[x^3]E[y^3] + 3 E[x^2]E[y^2] + 3 E[x]E[y] + 1 for independent x, y
    def ek(p, q):
        return p[2] * q[2] + 3 * p[1] * q[1] + 3 * p[0] * q[0] + 1
    pa, pb = _moments(0.3, 1.0), _moments(-0.2, 0.8)
    exact = ek(pa, pa) + ek(pb, pb) - 2 * ek(pa, pb)
    g = torch.Generator().manual_seed(1)
    a = 0.3 + 1.0 * torch.randn(20000, 1, generator=g, dtype=torch.float64)
    b = -0.2 + 0.8 * torch.randn(20000, 1, generator=g, dtype=torch.float64)
    out = kid(a, b, subsets=100, subset_size=1000)
    assert abs(out["mean"] - exact) < 4 * out["std"] / math.sqrt(100) + 0.02 * exact, (out, exact)
    same = kid(a, a + 0.0, subsets=20, subset_size=1000)
    assert abs(same["mean"]) < 4 * same["std"]  # unbiased: about 0 for one distribution


def test_kid_digits_small_for_real_and_large_for_noise():
    x_tr, _, x_te, _ = digits_split()
    assert kid_digits(x_te, x_tr) < kid_digits(torch.rand_like(x_te) * 2 - 1, x_tr) / 10
