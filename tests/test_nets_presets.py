"""The U-Net presets of Table 1 build on CPU with the parameter counts the paper reports, and run forward."""
import pytest
import torch

from gclib.nets import count_parameters, unet_celeba64, unet_cifar10, unet_imagenet32

# preset, image shape, parameters reported by the paper (millions)
PRESETS = [(unet_cifar10, (3, 32, 32), 35.0), (unet_imagenet32, (3, 32, 32), 39.5), (unet_celeba64, (3, 64, 64), 59.6)]


@pytest.mark.parametrize("make, shape, millions", PRESETS, ids=[p[0].__name__ for p in PRESETS])
def test_preset_size_and_forward(make, shape, millions):
    torch.manual_seed(0)
    net = make(dropout=0.1).eval()
    n = count_parameters(net)
    assert abs(n / (millions * 1e6) - 1) < 0.03, f"{make.__name__}: {n / 1e6:.2f}M parameters, paper {millions}M"
    assert net.resolution == shape[-1] and net.in_channels == shape[0]
    x = torch.randn(1, *shape)
    with torch.no_grad():
        y = net(x, torch.tensor([0.25]))
    assert y.shape == x.shape and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="UNet expects"):
        net(torch.randn(1, shape[0], shape[1] // 2, shape[2] // 2), torch.tensor([0.25]))
