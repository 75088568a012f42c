"""Short training runs pinned to the bit: the weights, EMA, optimiser state and logged numbers of small IC, OT, GC,
digits, ECT and denoising runs hash to the digests recorded below. The digests were computed on the code before
the loss objects (``gclib.objectives``) replaced ``step_loss``'s keywords and train.py's objective/schedule
branches, so this test proves that refactor (and any later one) left every trained number unchanged.

Floating-point results depend on the CPU kernels torch, MKL and oneDNN pick, so the absolute digests are compared
only on the platform that recorded them (``pinned_platform.RECORDED_ON``, a ``gclib.machine.fingerprint()``); elsewhere
that test skips, naming what differs. What the digests protect is asserted on every machine, in the run:
- every pinned run trained twice gives the same bits (and OT with and without the prefetch thread the same bits);
- a run cut midway and resumed gives the bits of the uninterrupted run;
- runs trained as one stack end where they end alone, to float rounding;
- every run matches its reference (``pinned_reference.json``: the losses of every step and projections of the final
  weights) to a tolerance far above what other kernels move (measured below) and far below what a change of training
  moves, so a refactor that changes training fails on any CPU.
Regenerate (only after a change that is MEANT to change training) with ``python tests/test_training_pinned.py``: it
prints the fingerprint and the digests to paste here and into pinned_platform.py, and rewrites pinned_reference.json.
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pinned_platform  # noqa: E402
from conftest import tiny_config  # noqa: E402

REFERENCE_FILE = Path(__file__).resolve().parent / "pinned_reference.json"
# Tolerances of the reference, relative (weights: to the norm of the final model and EMA weights). Measured on the
# recording machine with other kernels forced (ATEN_CPU_CAPABILITY=avx2 or default, MKL_ENABLE_INSTRUCTIONS and
# ONEDNN_MAX_CPU_ISA lowered to match): the digits runs' digests change, as on an Intel Xeon, but their weights move by
# at most 8.4e-7 of their norm and their losses by 2.4e-6. A GC run whose predictor is a frozen IC checkpoint instead
# of its own EMA (toy_gc_frozen against toy_gc), the smallest change of training among the pinned runs, moves the
# weights by 3.6e-4 and the losses by 2.3e-3.
WEIGHTS_RTOL = 5e-5
LOSS_RTOL = 1e-4
PROJECTIONS = 8
pytestmark = pytest.mark.usefixtures("one_thread")

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


def signature(res) -> dict:
    """The reference of one run, comparable across CPUs to tolerance: the loss of every step, the norm of the final
    model and EMA weights (float64) and their projections on ``PROJECTIONS`` fixed Gaussian directions (each moves by
    about the norm of a change of the weights, whatever its direction)."""
    ckpt = torch.load(res.checkpoint, weights_only=True)
    w = torch.cat([ckpt[part][k].detach().reshape(-1).to(torch.float64) for part in ("model", "ema")
                   for k in sorted(ckpt[part]) if ckpt[part][k].is_floating_point()])
    directions = torch.randn(PROJECTIONS, w.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return {"losses": pd.read_csv(res.metrics_csv)["loss"].astype(float).tolist(),
            "weights_norm": float(w.norm()), "projections": (directions @ w).tolist()}


def check_reference(name: str, got: dict, ref: dict) -> None:
    """Assert that a run's ``signature`` matches its reference within LOSS_RTOL and WEIGHTS_RTOL."""
    assert len(got["losses"]) == len(ref["losses"]), f"{name}: {len(got['losses'])} logged steps, reference {len(ref['losses'])}"
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=LOSS_RTOL, atol=0, err_msg=f"{name}: losses")
    scale = ref["weights_norm"]
    moved = max([abs(got["weights_norm"] - scale)] + [abs(a - b) for a, b in zip(got["projections"], ref["projections"])])
    assert moved <= WEIGHTS_RTOL * scale, (f"{name}: the final weights moved by {moved / scale:.2e} of their norm "
                                           f"(tolerance {WEIGHTS_RTOL:g})")


def train_all(tmp_path) -> dict:
    """name -> (TrainResult, digest, signature) of every pinned run, trained in order under ``tmp_path``."""
    from gclib.train import train
    out, ckpts = {}, {}
    for name, make in run_configs(tmp_path, ckpts).items():
        res = train(make())
        ckpts[name] = res.checkpoint
        out[name] = (res, run_digest(res), signature(res))
    return out


def all_digests(tmp_path) -> dict:
    return {name: digest for name, (_, digest, _) in train_all(tmp_path).items()}


def compare_digests(got: dict, pinned: dict) -> None:
    assert got.keys() == pinned.keys()
    changed = [k for k in pinned if got[k] != pinned[k]]
    assert not changed, f"training changed for {changed}: {[got[k] for k in changed]}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    return train_all(tmp_path_factory.mktemp("pinned"))


def test_short_runs_train_the_pinned_bits(trained):
    pinned_platform.require_recording_platform()
    compare_digests({k: d for k, (_, d, _) in trained.items()}, PINNED)


def test_pinned_runs_match_their_reference_on_any_cpu(trained):
    ref = json.loads(REFERENCE_FILE.read_text())["runs"]
    assert trained.keys() == ref.keys()
    for name, (_, _, sig) in trained.items():
        check_reference(name, sig, ref[name])


def test_every_pinned_run_trains_the_same_bits_twice(trained, tmp_path):
    again = all_digests(tmp_path)
    assert again == {k: d for k, (_, d, _) in trained.items()}
    assert again["toy_ot"] == again["toy_ot_no_prefetch"]  # the OT pairing solved ahead on a thread: the same pairs


@pytest.mark.parametrize("name,cut", [("toy_gc_online_all", 10), ("toy_ect_gc", 7), ("digits_gc", 3)])
def test_a_pinned_run_resumed_midway_trains_the_uninterrupted_bits(trained, tmp_path, name, cut):
    from gclib.train import train
    cfg = {**run_configs(tmp_path, {})[name](), "checkpoint_every": cut, "keep_checkpoints": 5}
    first = train(cfg)
    ckpts = first.run_dir / "checkpoints"
    assert (ckpts / f"ckpt-{cut:08d}.pt").is_file()
    (first.run_dir / "done.json").unlink()
    for p in ckpts.glob("ckpt-*.pt"):       # everything after the cut is lost, as if the run had been killed there
        if int(p.stem[5:]) > cut:
            p.unlink()
    resumed = train(cfg)
    assert not resumed.skipped
    assert run_digest(resumed) == trained[name][1]


def test_pinned_runs_stacked_end_where_they_end_alone(trained, tmp_path):
    from gclib.stack import train_stack
    names = ["toy_ic", "toy_ot", "toy_gc"]
    configs = run_configs(tmp_path, {})
    stacked = train_stack([configs[n]() for n in names])
    for name, s in zip(names, stacked):
        alone = torch.load(trained[name][0].checkpoint, weights_only=True)
        st = torch.load(s.checkpoint, weights_only=True)
        for part in ("model", "ema"):
            diffs = {k: (alone[part][k] - st[part][k]).abs().max().item() for k in alone[part]}
            assert max(diffs.values()) < 1e-5, (name, part, diffs)
        others = [torch.load(trained[o][0].checkpoint, weights_only=True)["model"] for o in names if o != name]
        assert all(max((o[k] - st["model"][k]).abs().max().item() for k in o) > 1e-3 for o in others)


FOREIGN = {**pinned_platform.RECORDED_ON, "cpu_vendor": "GenuineIntel", "cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
           "cpu_family_model": "6/143",
           "cpu_kernel_flags": pinned_platform.RECORDED_ON["cpu_kernel_flags"] + " avx512_fp16 amx_tile amx_bf16"}


def test_a_foreign_platform_skips_the_digests_never_fails_and_keeps_the_invariances(trained, monkeypatch):
    from gclib import machine
    monkeypatch.setattr(machine, "fingerprint", lambda *a, **k: dict(FOREIGN))
    wrong = {k: "0" * 64 for k in PINNED}   # digests this machine cannot train: compared, they would fail
    monkeypatch.setattr(sys.modules[__name__], "PINNED", wrong)
    with pytest.raises(pytest.skip.Exception) as skipped:
        test_short_runs_train_the_pinned_bits(trained)
    reason = str(skipped.value)
    assert "cpu_vendor: 'AuthenticAMD' -> 'GenuineIntel'" in reason and "avx512_fp16" in reason
    assert "torch:" not in reason   # only what differs is named
    # the invariances do not look at the platform: they pass here, and a changed run fails them
    test_pinned_runs_match_their_reference_on_any_cpu(trained)
    ref = json.loads(REFERENCE_FILE.read_text())["runs"]
    with pytest.raises(AssertionError, match="toy_gc"):
        check_reference("toy_gc", trained["toy_gc_frozen"][2], ref["toy_gc"])
    # on the recording platform (forged here) the digests are compared, and the wrong ones fail
    monkeypatch.setattr(machine, "fingerprint", lambda *a, **k: dict(pinned_platform.RECORDED_ON))
    with pytest.raises(AssertionError, match="training changed for"):
        test_short_runs_train_the_pinned_bits(trained)


def test_the_reference_tolerates_rounding_and_catches_a_change(trained):
    ref = json.loads(REFERENCE_FILE.read_text())["runs"]["digits_gc"]
    _, _, sig = trained["digits_gc"]
    # another CPU's rounding (1e-6 relative on every number) passes
    check_reference("digits_gc", {"losses": [v * (1 + 1e-6) for v in sig["losses"]],
                                  "weights_norm": sig["weights_norm"] * (1 + 1e-6),
                                  "projections": [v + 1e-6 * sig["weights_norm"] for v in sig["projections"]]}, ref)
    with pytest.raises(AssertionError, match="losses"):
        check_reference("digits_gc", {**sig, "losses": [v * (1 + 3 * LOSS_RTOL) for v in sig["losses"]]}, ref)
    with pytest.raises(AssertionError, match="final weights moved"):
        check_reference("digits_gc", {**sig, "projections": [v + 3 * WEIGHTS_RTOL * sig["weights_norm"]
                                                             for v in sig["projections"]]}, ref)
    with pytest.raises(AssertionError, match="logged steps"):
        check_reference("digits_gc", {**sig, "losses": sig["losses"][:-1]}, ref)


def record(folder: Path) -> None:
    """Print the fingerprint and digests to paste, and rewrite pinned_reference.json, from runs trained here."""
    from gclib.machine import fingerprint
    runs = train_all(folder)
    print(f"RECORDED_ON = {json.dumps(fingerprint(), indent=4)}  # tests/pinned_platform.py")
    print("PINNED = {")
    for name, (_, digest, _) in runs.items():
        print(f'    "{name}": "{digest}",')
    print("}")
    REFERENCE_FILE.write_text(json.dumps({
        "about": "tests/test_training_pinned.py: the loss of every step and the final weights' norm and projections of "
                 "each pinned run, compared to tolerance on every CPU; written by python tests/test_training_pinned.py",
        "recorded_on": fingerprint(), "runs": {name: sig for name, (_, _, sig) in runs.items()}}, indent=1) + "\n")
    print(f"wrote {REFERENCE_FILE}")


if __name__ == "__main__":
    import tempfile
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        record(Path(d))
