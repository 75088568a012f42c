"""Networks F(x_in, c_noise) for the consistency parameterisation (own code, small and configurable).

- ``MLP``: vectors (B, dim), for 2-D toys and flattened digits.
- ``UNet``: images (B, C, H, W), H = W in 8..64, with a configurable channel count, channel multipliers,
  residual blocks per level, attention resolutions and dropout.
Presets: ``unet_cifar10()`` (the paper's CIFAR-10 scale, about 35M parameters) and ``unet_digits()``
(8x8 digits, under 1M parameters).
Table 1's larger sets: ``unet_imagenet32()`` (about 39.5M) and ``unet_celeba64()`` (about 59.6M; also LSUN Church 64).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

# the names of Config.model: the MLP, the configurable U-Net and the U-Net presets below
MODELS = ("mlp", "unet", "unet_digits", "unet_cifar10", "unet_imagenet32", "unet_celeba64")
# The config fields of the network section a network is built from (``gclib.config.part(cfg, "network")``, with
# ``name`` its ``model``; ``gclib.models.build_network``): mlp reads hidden, depth, emb_dim; unet channels,
# channel_mult, num_blocks, attn_resolutions, dropout; the unet_* presets dropout.
SETTINGS = ("hidden", "depth", "emb_dim", "channels", "channel_mult", "num_blocks", "attn_resolutions", "dropout")


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of c_noise = log(sigma) / 4 (shape (B,)) -> (B, dim)."""

    def __init__(self, dim: int, scale: float = 250.0, max_period: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim={dim} must be even")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = scale

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        args = (self.scale * c_noise.float())[:, None] * self.freqs[None, :]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class MLP(nn.Module):
    """MLP with the noise embedding added to the first hidden layer. x: (B, dim) -> (B, dim)."""

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 3, emb_dim: int = 64):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"MLP needs dim, hidden, depth >= 1 (got {dim}, {hidden}, {depth})")
        self.dim = dim
        self.embed = nn.Sequential(NoiseEmbedding(emb_dim), nn.Linear(emb_dim, hidden), nn.SiLU())
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        h = self.inp(x.reshape(shape[0], -1)) + self.embed(c_noise)
        for layer in self.layers:
            h = layer(F.silu(h))
        return self.out(F.silu(h)).reshape(shape)


def _norm(ch: int) -> nn.GroupNorm:
    groups = min(32, ch // 4) if ch >= 4 else 1
    while ch % groups:
        groups -= 1
    return nn.GroupNorm(groups, ch, eps=1e-6)


class ResBlock(nn.Module):
    """GN-SiLU-conv, scale/shift from the noise embedding, GN-SiLU-dropout-conv, skip; output scaled 1/sqrt(2)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.drop = _norm(cout), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.drop(h))
        return (self.skip(x) + h) / math.sqrt(2.0)


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, output scaled 1/sqrt(2)."""

    def __init__(self, ch: int, head_dim: int = 64):
        super().__init__()
        self.heads = max(1, ch // head_dim)
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x, emb=None):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return (x + self.proj(out)) / math.sqrt(2.0)


class UNet(nn.Module):
    """U-Net for square images. x: (B, C, H, W) -> (B, C, H, W).

    channels: base width; channel_mult: width multipliers per level (one level per resolution, halving);
    num_blocks: residual blocks per level (encoder; the decoder has one more); attn_resolutions:
    resolutions that get self-attention after each block (the bottleneck always has one).
    """

    def __init__(self, in_channels: int = 3, resolution: int = 32, channels: int = 128,
                 channel_mult: Sequence[int] = (1, 2, 2), num_blocks: int = 3,
                 attn_resolutions: Sequence[int] = (), dropout: float = 0.0, emb_dim: int | None = None):
        super().__init__()
        levels = len(channel_mult)
        if not 8 <= resolution <= 64 or resolution % (2 ** (levels - 1)):
            raise ValueError(f"resolution={resolution} must be in 8..64 and divisible by 2^(levels-1)={2 ** (levels - 1)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        emb_dim = emb_dim or 4 * channels
        self.resolution, self.in_channels = resolution, in_channels
        self.embed = nn.Sequential(NoiseEmbedding(channels), nn.Linear(channels, emb_dim), nn.SiLU(),
                                   nn.Linear(emb_dim, emb_dim), nn.SiLU())
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        self.down = nn.ModuleList()
        skips, ch, res = [channels], channels, resolution
        for level, mult in enumerate(channel_mult):
            for _ in range(num_blocks):
                self.down.append(ResBlock(ch, channels * mult, emb_dim, dropout))
                ch = channels * mult
                if res in attn_resolutions:
                    self.down.append(Attention(ch))
                skips.append(ch)
            if level < levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                res //= 2
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), Attention(ch), ResBlock(ch, ch, emb_dim, dropout)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), channels * mult, emb_dim, dropout))
                ch = channels * mult
                if res in attn_resolutions:
                    self.up.append(Attention(ch))
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))
                res *= 2
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-1] != self.resolution:
            raise ValueError(f"UNet expects (B, {self.in_channels}, {self.resolution}, {self.resolution}); got {tuple(x.shape)}")
        emb = self.embed(c_noise)
        h = self.conv_in(x)
        hs = [h]
        for m in self.down:
            h = m(h, emb) if isinstance(m, (ResBlock, Attention)) else m(h)
            if isinstance(m, Attention):
                hs[-1] = h  # the skip carries the block's output after its attention
            else:
                hs.append(h)
        for m in self.mid:
            h = m(h, emb)
        for m in self.up:
            if isinstance(m, ResBlock):
                h = m(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = m(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def unet_cifar10(dropout: float = 0.0) -> UNet:
    """The paper's CIFAR-10 scale: 128 channels, multipliers [1, 2, 2], 3 blocks per level, attention at the
    bottleneck (about 35M parameters)."""
    return UNet(in_channels=3, resolution=32, channels=128, channel_mult=(1, 2, 2), num_blocks=3,
                attn_resolutions=(), dropout=dropout)


def unet_digits(dropout: float = 0.0) -> UNet:
    """8x8 one-channel digits: 24 channels, multipliers [1, 2], 2 blocks per level, attention at 4x4 (0.6M)."""
    return UNet(in_channels=1, resolution=8, channels=24, channel_mult=(1, 2), num_blocks=2,
                attn_resolutions=(4,), dropout=dropout)


def unet_imagenet32(dropout: float = 0.0) -> UNet:
    """ImageNet 32x32 at the paper's scale (about 39.5M parameters reported; this preset has 39.6M): 128 channels,
    multipliers [1, 2, 2, 2] (32, 16, 8, 4), 2 blocks per level, attention at 16x16 and 8x8 (and the bottleneck).
    Assumed: the authors' released ImageNet-32 network is an NCSN++/DDPM++-style U-Net of 128 channels; its exact
    multipliers, depth and attention are not restated here, so these values are chosen to match its size."""
    return UNet(in_channels=3, resolution=32, channels=128, channel_mult=(1, 2, 2, 2), num_blocks=2,
                attn_resolutions=(16, 8), dropout=dropout)


def unet_celeba64(dropout: float = 0.0) -> UNet:
    """CelebA 64x64 (and LSUN Church 64x64) at the paper's scale (about 59.6M parameters reported; this preset
    has 58.5M). Assumed: the authors' NCSN++/DDPM++-style network of 128 channels in score-SDE's NCSN++ layout
    for 64x64 faces, multipliers [1, 2, 2, 2] (64, 32, 16, 8), 4 blocks per level, attention at 16x16 (and the
    bottleneck); noise-embedding width 256 to match the size: this U-Net's blocks take a scale AND a shift from the
    embedding (Linear(emb, 2 * out)), so width 256 gives each block as many embedding weights as a
    shift-only block on the usual width 4 * 128 = 512."""
    return UNet(in_channels=3, resolution=64, channels=128, channel_mult=(1, 2, 2, 2), num_blocks=4,
                attn_resolutions=(16,), dropout=dropout, emb_dim=256)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
