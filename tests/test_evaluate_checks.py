"""`gclib evaluate` checks what every metric needs (packages, weight files, data) before it draws a sample: without
the Inception weights it stops at once, in one line naming the file, its checksum and how to provide it."""
from __future__ import annotations

import time

import pytest
import torch

from conftest import tiny_config
from gclib import evaluation
from gclib.cli import main
from gclib.evaluation import check_metric_data, check_metrics
from gclib.metrics import fid as fid_module
from gclib.metrics.fid import INCEPTION_FILE, INCEPTION_SHA256_PREFIX, INCEPTION_URL, WEIGHTS_ENV


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from gclib.train import train
    return str(train(tiny_config(tmp_path_factory.mktemp("ckpt"), total_steps=10)).checkpoint)


@pytest.fixture
def no_sampling(monkeypatch):
    calls = []

    def generate(*a, **k):
        calls.append(a)
        raise AssertionError("samples were drawn before the metrics' prerequisites were checked")
    monkeypatch.setattr(evaluation, "generate", generate)
    return calls


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No Inception weights anywhere: an empty torch hub folder and no $GCLIB_INCEPTION_WEIGHTS."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    return tmp_path / "hub" / "checkpoints" / INCEPTION_FILE


def _stderr_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_kid_and_isc_without_weights_fail_at_once_naming_the_file(tiny_checkpoint, no_weights, no_sampling, capsys):
    t0 = time.perf_counter()
    rc = main(["evaluate", tiny_checkpoint, "--metric", "kid", "--metric", "isc", "--n", "50000"])
    elapsed = time.perf_counter() - t0
    err = _stderr_line(capsys)
    assert rc == 2 and not no_sampling and elapsed < 10
    assert err.startswith("gclib evaluate: error: metric 'kid', 'isc': Inception weights " + INCEPTION_FILE)
    assert str(no_weights) in err and f"SHA-256 starting {INCEPTION_SHA256_PREFIX}" in err and INCEPTION_URL in err
    assert "--weights-path" in err and WEIGHTS_ENV in err


def test_weights_path_and_environment_variable_are_the_files_looked_for(tiny_checkpoint, no_weights, no_sampling,
                                                                        tmp_path, monkeypatch, capsys):
    given = tmp_path / "elsewhere" / INCEPTION_FILE
    assert main(["evaluate", tiny_checkpoint, "--metric", "fid", "--weights-path", str(given)]) == 2
    err = _stderr_line(capsys)
    assert f"not found at {given} (given)" in err
    (tmp_path / "env").mkdir()
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "env"))   # a folder: the file is looked for inside it
    assert main(["evaluate", tiny_checkpoint, "--metric", "kid"]) == 2
    assert f"not found at {tmp_path / 'env' / INCEPTION_FILE} (from ${WEIGHTS_ENV})" in _stderr_line(capsys)
    # a file that is not the weights: its SHA-256 is named against the expected prefix
    wrong = tmp_path / INCEPTION_FILE
    wrong.write_bytes(b"not the weights")
    assert main(["evaluate", tiny_checkpoint, "--metric", "isc", "--weights-path", str(wrong)]) == 2
    err = _stderr_line(capsys)
    assert str(wrong) in err and f"does not start with {INCEPTION_SHA256_PREFIX}" in err and not no_sampling


def test_data_that_a_metric_cannot_use_is_named_before_sampling(tiny_checkpoint, tmp_path, monkeypatch, no_sampling,
                                                                capsys):
    # weights present (a stand-in file marked as verified), but the checkpoint's data are 2-D points, not images
    fake = tmp_path / INCEPTION_FILE
    fake.write_bytes(b"stand-in")
    st = fake.stat()
    monkeypatch.setitem(fid_module._VERIFIED, (str(fake.resolve()), st.st_size, st.st_mtime_ns),
                        INCEPTION_SHA256_PREFIX + "0" * 56)
    rc = main(["evaluate", tiny_checkpoint, "--metric", "fid", "--metric", "fd_digits", "--metric", "w2",
               "--weights-path", str(fake)])
    err = _stderr_line(capsys)
    assert rc == 2 and not no_sampling
    assert "metric 'fid': needs images (C, H, W)" in err and "metric 'fd_digits': needs 8x8 digits" in err
    assert "shape (2,)" in err and "'w2'" not in err


def test_metrics_without_prerequisites_still_evaluate(tiny_checkpoint, capsys):
    assert main(["evaluate", tiny_checkpoint, "--metric", "w2", "--n", "64"]) == 0
    assert '"w2": ' in capsys.readouterr().out


def test_a_missing_package_is_named_with_its_extra(monkeypatch, no_weights):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch_fidelity" else
                        real(name, *a))
    with pytest.raises(ModuleNotFoundError) as e:
        check_metrics(["w2", "kid", "isc"])
    msg = str(e.value)
    assert msg.startswith("metric 'kid', 'isc': ") and "'torch-fidelity'" in msg and "gclib[fid]" in msg
    assert INCEPTION_FILE not in msg   # the package comes first: the weights are read through it


def test_check_functions_accept_what_each_metric_can_use():
    assert check_metrics(["w2", "nn_dist", "fd_digits"]) == ["w2", "nn_dist", "fd_digits"]
    check_metric_data(["fid", "kid", "isc"], (3, 32, 32))
    check_metric_data(["fid", "fd_digits", "kid_digits"], (1, 8, 8))
    with pytest.raises(ValueError, match="metric='kdi' is not valid"):
        check_metrics(["kdi"])
    assert set(evaluation.NEEDS) == set(evaluation.METRICS)   # every registered metric says what it needs
