"""One device choice for the whole package (gclib.device.resolve_device)."""
import pytest
import torch

from gclib.checks import ConfigError
from gclib.device import resolve_device


def test_auto_follows_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"


def test_bad_device_and_missing_gpu_name_the_parameter(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^device='gpu' is not valid; allowed values: 'auto', 'cpu', 'cuda'$"):
        resolve_device("gpu")
    with pytest.raises(ConfigError, match=r"^--device='cuda' but CUDA is not available"):
        resolve_device("cuda", name="--device", error=ConfigError)


def test_every_user_calls_the_one_function():
    from gclib import distributed
    from gclib.experiments import common
    from gclib.metrics import fid, inception
    assert common.resolve_device is distributed.resolve_device is fid.resolve_device is inception.resolve_device \
        is resolve_device
