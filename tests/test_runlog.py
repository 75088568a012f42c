"""Run logs a batch job can read (gclib.runlog): status lines on a redirected stdout, 'resumed from step k' on
resume, log.jsonl that behaves as metrics.csv does across a kill and resume, and TensorBoard scalars."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from gclib.checks import ConfigError
from gclib.runlog import fmt_duration, read_log
from gclib.train import train
from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TIMING = ("time", "samples_per_s", "sec_per_step", "eta_s", "train_seconds")

# `gclib train CONFIG` as the command line runs it, killed (SIGKILL) just before the checkpoint of step `at` is written
KILLER = textwrap.dedent("""
    import os, signal, sys
    import gclib.train as gt
    from gclib.cli import main
    real, at = gt.atomic_save, int(sys.argv[2])
    def hook(obj, path):
        if obj["step"] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(obj, path)
    gt.atomic_save = hook
    sys.exit(main(["train", sys.argv[1]]))
""")


def _cfg(tmp_path, run, **kw):
    return tiny_config(tmp_path, name="logged", run_dir=str(tmp_path / run), total_steps=40, log_every=15,
                       checkpoint_every=10, eval_every=20, eval_metrics=["w2"], eval_n=64, flow="gc", **kw)


def _records(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_log(Path(run_dir) / "log.jsonl")
            if r["event"] in ("train", "eval")]


def test_stdout_to_a_file_logs_periodic_lines_and_the_resume(tmp_path):
    cfg = _cfg(tmp_path, "killed")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "killer.py").write_text(KILLER)
    with open(tmp_path / "first.log", "w") as out:  # stdout is a file, not a terminal
        p = subprocess.run([sys.executable, str(tmp_path / "killer.py"), str(tmp_path / "c.yaml"), "30"], env=ENV,
                           stdout=out, stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    first = (tmp_path / "first.log").read_text().splitlines()
    assert first[0].startswith(f"[logged] started: {tmp_path / 'killed'}, steps 1..40, batch 32, flow gc (mu 0.5)")
    steps = [ln for ln in first if " | loss " in ln]
    assert [ln.split()[2] for ln in steps] == ["15/40", "30/40"]  # every log_every steps, as they happen
    assert all("samples/s" in ln and "ETA " in ln for ln in steps) and "eval@20 w2 " in steps[1]
    assert any(ln.startswith("[logged] eval at step 20: w2 ") for ln in first)

    with open(tmp_path / "second.log", "w") as out:
        r = subprocess.run([sys.executable, "-m", "gclib", "train", str(tmp_path / "c.yaml")], env=ENV, stdout=out,
                           stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    second = (tmp_path / "second.log").read_text().splitlines()
    ckpt = tmp_path / "killed" / "checkpoints" / "ckpt-00000020.pt"
    assert re.fullmatch(rf"\[logged\] resumed from step 20 \(checkpoint {re.escape(str(ckpt))}\) at {STAMP}", second[0])
    assert [ln.split()[2] for ln in second if " | loss " in ln] == ["30/40", "40/40"]

    # log.jsonl: cut back to the checkpoint's step and continued, like metrics.csv; the interval means are the same
    # as an uninterrupted run's (the steps 16..20 before the resume are counted in the record of step 30)
    ref = train(_cfg(tmp_path, "ref"))
    assert _records(tmp_path / "killed") == _records(ref.run_dir)
    events = [(r["event"], r["step"]) for r in read_log(tmp_path / "killed" / "log.jsonl")]
    # (the first process had logged step 30 before it was killed: that record went with the replayed steps)
    assert events == [("start", 0), ("train", 15), ("eval", 20), ("resume", 20), ("train", 30), ("train", 40),
                      ("eval", 40)]
    last = read_log(tmp_path / "killed" / "log.jsonl")[-2]
    assert last["steps"] == 10 and last["total_steps"] == 40 and last["eta_s"] == 0.0


STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def test_status_lines_carry_the_wall_clock_time_and_the_time_elapsed(tmp_path, capsys):
    """Each status line ends with the local time it was written and the time since the run (re)started in this
    process; the start line carries the time too."""
    before = time.time()
    train(tiny_config(tmp_path, total_steps=30, log_every=10))
    after = time.time()
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(rf"\[t\] started: .*, steps 1\.\.30, .* at {STAMP}", out[0])
    lines = [ln for ln in out if " | loss " in ln]
    assert [ln.split()[2] for ln in lines] == ["10/30", "20/30", "30/30"]
    elapsed = []
    for ln in lines:
        m = re.fullmatch(rf".* \| ETA \S+ \| ({STAMP}) \| elapsed (\d+)s", ln)
        assert m, ln
        stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
        assert int(before) <= stamp <= after + 1                     # the local time the line was written
        elapsed.append(int(m.group(2)))
    assert elapsed == sorted(elapsed) and elapsed[-1] <= after - before + 1


def test_log_every_zero_prints_only_the_last_step(tmp_path, capsys):
    train(tiny_config(tmp_path, total_steps=12, log_every=0))
    out = [ln for ln in capsys.readouterr().out.splitlines() if " | loss " in ln]
    assert len(out) == 1 and out[0].startswith("[t] step 12/12 (100.0%) | loss ")


def test_fmt_duration():
    assert [fmt_duration(s) for s in (0, 59.4, 61, 3599, 3600, 3725, 90061)] == \
        ["0s", "59s", "1m01s", "59m59s", "1h00m", "1h02m", "25h01m"]
    assert fmt_duration(float("nan")) == "?" and fmt_duration(None) == "?"


def test_tensorboard_without_the_package_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if tensorboard were absent
    with pytest.raises(ConfigError, match=r"tensorboard=true needs the tensorboard package.*\[tensorboard\]"):
        train(tiny_config(tmp_path, total_steps=5, tensorboard=True))


def test_tensorboard_scalars_appear_when_enabled(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install -e '.[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    res = train(tiny_config(tmp_path, total_steps=20, log_every=10, flow="gc", eval_every=10, eval_metrics=["w2"],
                            eval_n=64, tensorboard=True))
    tb = res.run_dir / "tensorboard"
    assert list(tb.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/gc_rows", "train/samples_per_s", "eval/w2"} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 21))
    assert [e.step for e in acc.Scalars("eval/w2")] == [10, 20]
    logged = {r["step"]: r for r in read_log(res.run_dir / "log.jsonl") if r["event"] == "eval"}
    assert acc.Scalars("eval/w2")[0].value == pytest.approx(logged[10]["w2"], rel=1e-6)
    assert all(0 <= e.value <= 32 for e in acc.Scalars("train/gc_rows"))
    assert json.loads((res.run_dir / "log.jsonl").read_text().splitlines()[0])["event"] == "start"


def test_tensorboard_is_off_by_default(tmp_path):
    res = train(tiny_config(tmp_path, total_steps=5))
    assert not (res.run_dir / "tensorboard").exists() and (res.run_dir / "log.jsonl").is_file()


def test_upscale_repeats_each_pixel_by_the_smallest_whole_factor():
    from gclib.images import upscale
    pic = torch.arange(2 * 3 * 82, dtype=torch.float32).reshape(2, 3, 82)
    big = upscale(pic)
    assert big.shape == (2, 12, 328)                                  # 82 px wide: factor 4 -> 328 >= 256
    assert torch.equal(big[:, 4 * 2 + 3, 4 * 81 + 1], pic[:, 2, 81])  # nearest neighbour: the pixel itself
    assert torch.equal(big, pic.repeat_interleave(4, 1).repeat_interleave(4, 2))
    assert upscale(torch.zeros(3, 5, 300)).shape == (3, 5, 300)      # wide enough: unchanged
    assert upscale(torch.zeros(3, 4, 255)).shape == (3, 8, 510)


def test_tensorboard_gets_the_sample_grid_upscaled_at_sample_every(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install -e '.[tensorboard]')")
    import io as _io

    import numpy as np
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    res = train(dict(name="d", dataset="digits", model="unet", channels=8, channel_mult=[1, 2], num_blocks=1,
                     optimizer="adam", lr=1e-3, batch_size=16, total_steps=10, sample_every=5, sample_n=64,
                     checkpoint_every=0, progress=False, tensorboard=True, device="cpu",
                     runs_dir=str(tmp_path / "runs")))
    acc = EventAccumulator(str(res.run_dir / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    events = acc.Images("samples/grid")
    assert [e.step for e in events] == [5, 10]
    for e in events:
        tb = np.asarray(Image.open(_io.BytesIO(e.encoded_image_string)).convert("RGB"))
        png = np.asarray(Image.open(res.run_dir / "samples" / f"step-{e.step:08d}.png").convert("RGB"))
        assert png.shape[:2] == (82, 82) and tb.shape[:2] == (328, 328)     # 8 tiles of 8 px + 2 px borders, x4
        assert np.array_equal(tb, png.repeat(4, 0).repeat(4, 1))           # the saved grid, each pixel 4x4
    toy = train(tiny_config(tmp_path, name="toy2d", total_steps=6, sample_every=3, tensorboard=True))
    acc = EventAccumulator(str(toy.run_dir / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("samples/grid")] == [3, 6]           # 2-D samples: their scatter plot
