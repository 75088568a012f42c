"""Short training runs pinned to the bit: the weights, EMA, optimiser state and logged numbers of small IC, OT, GC,
digits, ECT and denoising runs hash to the digests recorded below. The digests were computed on the code before
the loss objects (``gclib.objectives``) replaced ``step_loss``'s keywords and train.py's objective/schedule
branches, so this test proves that refactor (and any later one) left every trained number unchanged.

Floating-point results depend on the CPU kernels torch picks, so the digests are compared only on the platform
that recorded them (torch version and CPU capability, ``PLATFORM``); elsewhere the test is skipped with the reason.
Regenerate (only after a change that is MEANT to change training) with
``python tests/test_training_pinned.py`` and paste its output into ``PINNED``.
"""
import hashlib
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_config  # noqa: E402

PLATFORM = ("2.14.1+cu130", "AVX512")

PINNED = {  # recorded at commit ffccfdd (before the loss objects)
    "toy_ic": "d131028438f4a97a4883cef9eb14f44cb277c7824e28970f4704366a2191eaf6",
    "toy_ot": "311151edf9a40bb4dee530c989d6478a10a0587157e72c3a05bca4589b11b3b0",
    "toy_ot_no_prefetch": "311151edf9a40bb4dee530c989d6478a10a0587157e72c3a05bca4589b11b3b0",
    "toy_gc": "da10087cde845b5fdd51800a4439c0954bc14c93e1db490e27140ac9a7f12d44",
    "toy_gc_online_all": "6da0494fa0af5f3d8022fa4057f915ce8e31c4884534a8e91e0c3d2942839702",
    "toy_gc_frozen": "da4828d16a4091df3e202c5df42a57f4847cfdee10fe84563da13dd48d4b9af9",
    "toy_ect_gc": "e7399a41887c0f1234f7ac409f2a1de9c186ee6bd5cf64d45a76b3f8e5edeb5a",
    "toy_ect_earlier": "749015c6bf2a61394bec1e2409fb0a228019a5ec8357c4886cbcf2dbb849f2a4",
    "toy_denoising": "2cc1e2246d705e9f190c33c8f3925fce3173598472346f8e0fafd3e101541e33",
    "digits_gc": "de2068566f363b34923e5f90ee93cdf18635ced7bd416a525dacbe14038a9be0",
    "digits_denoising": "9704b315090316ecadf3179dfa10a03e53d8387777a8c5a73a8313fb194bffb8",
    "digits_ect_ot": "7d90873c5d1368507c33e91870a28a3ccecfcdf0bdf9a9951f269433a51101fb",
}


def _digits(tmp_path, **kw):
    cfg = dict(name="d", dataset="digits", model="unet", channels=8, channel_mult=[1, 2], num_blocks=1,
               distance="pseudo_huber", optimizer="adam", lr=1e-3, batch_size=8, total_steps=6, checkpoint_every=0,
               ema_every=1, progress=False, runs_dir=str(tmp_path / "runs"), device="cpu")
    cfg.update(kw)
    return cfg


def _toy(tmp_path, **kw):
    return tiny_config(tmp_path, **{"total_steps": 20, "checkpoint_every": 0, "device": "cpu", **kw})


def run_configs(tmp_path, first_checkpoints: dict) -> dict:
    """name -> config; ``first_checkpoints`` gives the checkpoints of earlier runs (frozen predictor, init)."""
    return {
        "toy_ic": lambda: _toy(tmp_path, name="ic", flow="ic"),
        "toy_ot": lambda: _toy(tmp_path, name="ot", flow="ot"),
        "toy_ot_no_prefetch": lambda: _toy(tmp_path, name="ot_np", flow="ot", ot_prefetch=False),
        "toy_gc": lambda: _toy(tmp_path, name="gc", flow="gc", mu=0.5),
        "toy_gc_online_all": lambda: _toy(tmp_path, name="gc_on", flow="gc", mu=0.7, predictor="online",
                                          predict_all=True, distance="pseudo_huber"),
        "toy_gc_frozen": lambda: _toy(tmp_path, name="gc_fz", flow="gc", mu=0.5,
                                      predictor=str(first_checkpoints["toy_ic"])),
        "toy_ect_gc": lambda: _toy(tmp_path, name="ect", schedule="ect", flow="gc", mu=0.3, ect_stages=4),
        "toy_ect_earlier": lambda: _toy(tmp_path, name="ect0", schedule="ect", flow="ic", ect_stage_offset=0,
                                        ect_r_clip="sigma_min", ect_distance=None),
        "toy_denoising": lambda: _toy(tmp_path, name="den", objective="denoising"),
        "digits_gc": lambda: _digits(tmp_path, name="dgc", flow="gc", mu=0.5),
        "digits_denoising": lambda: _digits(tmp_path, name="dden", objective="denoising", sigma_data=0.4),
        "digits_ect_ot": lambda: _digits(tmp_path, name="dect", schedule="ect", flow="ot", total_steps=8,
                                         init_checkpoint=str(first_checkpoints["digits_denoising"])),
    }


def _digest_tensors(h, prefix: str, sd: dict) -> None:
    for k in sorted(sd, key=str):
        v = sd[k]
        if isinstance(v, dict):
            _digest_tensors(h, f"{prefix}{k}.", v)
        elif isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous().reshape(-1)
            h.update(f"{prefix}{k}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(f"{prefix}{k}={v!r}".encode())


def run_digest(res) -> str:
    """sha256 of the final checkpoint's model, EMA and optimiser state and of metrics.csv's numbers (not its
    timings)."""
    ckpt = torch.load(res.checkpoint, weights_only=True)
    h = hashlib.sha256()
    _digest_tensors(h, "model.", ckpt["model"])
    _digest_tensors(h, "ema.", ckpt["ema"])
    _digest_tensors(h, "opt.", ckpt["optimizer"]["state"])
    df = pd.read_csv(res.metrics_csv, dtype=str)
    h.update(df[["step", "loss", "num_points", "lr", "gc_fraction"]].to_csv(index=False).encode())
    return h.hexdigest()


def all_digests(tmp_path) -> dict:
    from gclib.train import train
    out, ckpts = {}, {}
    for name, make in run_configs(tmp_path, ckpts).items():
        res = train(make())
        ckpts[name] = res.checkpoint
        out[name] = run_digest(res)
    return out


def _platform():
    return (torch.__version__, torch.backends.cpu.get_cpu_capability())


def test_short_runs_train_the_pinned_bits(tmp_path, one_thread):
    if _platform() != PLATFORM:
        pytest.skip(f"digests recorded on torch {PLATFORM[0]} / {PLATFORM[1]}; this machine is "
                    f"{_platform()[0]} / {_platform()[1]} (other kernels, other last bits)")
    got = all_digests(tmp_path)
    assert got.keys() == PINNED.keys()
    changed = [k for k in PINNED if got[k] != PINNED[k]]
    assert not changed, f"training changed for {changed}: {[got[k] for k in changed]}"


if __name__ == "__main__":
    import tempfile
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        print(f"PLATFORM = {_platform()!r}")
        for name, digest in all_digests(Path(d)).items():
            print(f'    "{name}": "{digest}",')
