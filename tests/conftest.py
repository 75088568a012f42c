"""Shared fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny-model tests on one torch thread (restored afterwards): on a busy 2-core machine two
    threads make small MLPs many times slower, and one thread keeps the results reproducible."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_config(tmp_path, **changes) -> dict:
    """A training config that runs in about a second: a 16-unit MLP on 512 points of the two-Gaussians toy,
    30 steps, checkpoints every 10 (the training-loop tests change what they need)."""
    cfg = dict(name="t", dataset="two_gaussians", num_data=512, model="mlp", hidden=16, depth=1, emb_dim=8,
               sigma_max=5.0, s0=2, s1=8, distance="l2", optimizer="adam", lr=1e-3, batch_size=32, total_steps=30,
               ema_every=1, checkpoint_every=10, keep_checkpoints=2, progress=False, runs_dir=str(tmp_path / "runs"))
    cfg.update(changes)
    return cfg
