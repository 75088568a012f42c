"""OT pairing solved ahead on a worker thread (gclib.prefetch): the same batches, noise and permutations as solving
inside the step, the run's random state untouched, and training (also across a resume) identical bit for bit."""
import pandas as pd
import pytest
import torch

from gclib.couplings import ot_permutation
from gclib.data import BatchIterator
from gclib.prefetch import OTPrefetcher
from gclib.rng import Streams
from gclib.train import train
from conftest import tiny_config


@pytest.mark.parametrize("solver,dim", [("scipy", 5), ("emd", 64)])
def test_take_gives_the_steps_own_batch_noise_and_permutation(solver, dim):
    data = torch.randn(300, dim, generator=torch.Generator().manual_seed(0))
    ref_batches, ref_streams = BatchIterator(data, 96, seed=3), Streams.from_seed(5)
    batches, streams = BatchIterator(data, 96, seed=3), Streams.from_seed(5)
    pre = OTPrefetcher(batches, streams.noise, solver)
    try:
        for _ in range(7):  # crosses an epoch boundary (300 / 96)
            x_ref = next(ref_batches)
            z_ref = torch.randn(x_ref.shape, generator=ref_streams.noise, dtype=x_ref.dtype)  # as step_loss draws z
            x, z, perm = pre.take()
            assert torch.equal(x, x_ref) and torch.equal(z, z_ref)
            assert torch.equal(perm, ot_permutation(x_ref, z_ref, solver))
            # the run's state advanced exactly as one step without prefetching advances it
            assert batches.state_dict() == ref_batches.state_dict()
            assert torch.equal(streams.noise.get_state(), ref_streams.noise.get_state())
        assert pre.hits == 6 and pre.misses == 1  # every step after the first was solved ahead
        # the state changed behind its back (a resume loads a checkpoint): the prepared step is not used
        batches.load_state_dict({**batches.state_dict(), "batches": 2})
        ref_batches.load_state_dict({**ref_batches.state_dict(), "batches": 2})
        x, z, perm = pre.take()
        assert torch.equal(x, next(ref_batches)) and pre.misses == 2
    finally:
        pre.close()


def _run(tmp_path, name, **kw):
    cfg = tiny_config(tmp_path, name=name, flow="ot", batch_size=64, num_data=256, total_steps=24, **kw)
    res = train(cfg)
    ck = torch.load(res.checkpoint, weights_only=True)
    return pd.read_csv(res.metrics_csv).drop(columns=["seconds", "samples_per_s"]), ck["model"], ck["ema"], res


def _same(a, b):
    pd.testing.assert_frame_equal(a[0], b[0])
    for i in (1, 2):
        assert a[i].keys() == b[i].keys() and all(torch.equal(a[i][k], b[i][k]) for k in a[i])


def test_training_with_and_without_prefetch_is_identical_also_across_a_resume(tmp_path):
    on = _run(tmp_path, "on", ot_prefetch=True)
    off = _run(tmp_path, "off", ot_prefetch=False)
    assert on[3].run_dir.name.split("-")[-1] == off[3].run_dir.name.split("-")[-1]  # ot_prefetch is not hashed
    _same(on, off)

    def stop(step, model):  # the run dies after its step-10 checkpoint, mid-way to 20
        if step == 15:
            raise RuntimeError("stopped by the test")
        return {}
    cfg = tiny_config(tmp_path, name="resumed", flow="ot", batch_size=64, num_data=256, total_steps=24, eval_every=5,
                      ot_prefetch=True)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        train(cfg, eval_fns=[stop])
    _same(on, _run(tmp_path, "resumed", eval_every=5, ot_prefetch=True))


def test_the_prefetch_benchmark_runs_and_reports_paired_ratios(tmp_path):
    """benchmarks/step_time.py --ot-prefetch on the tiny U-Net: every variant timed, ratios paired (no timing is
    asserted; speed is measured in benchmarks/, results in results/bench/ot_prefetch.json)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import step_time
    threads = torch.get_num_threads()
    try:
        res = step_time.run_ot_prefetch(("tiny",), (8,), threads=1, out=tmp_path / "o.json", repeats=3, budget_s=None)
    finally:
        torch.set_num_threads(threads)
    (m,) = res["models"]
    assert set(m["variants"]) == {"ic", "ot", "ot_prefetch", "ot_solve"} and m["rounds"] == 3
    assert m["variants"]["ot_prefetch"]["paired_ratio_to_ic"]["rounds"] == 3
    assert m["prefetch_hits"] >= 3 and m["prefetch_misses"] == 1  # the timed steps used pairs solved ahead
    assert (tmp_path / "o.json").is_file() and "| tiny" in step_time.ot_prefetch_table(res)
