"""Nothing lost, nothing shared by accident: kills inside the evaluation window, the run lock, full disks,
corrupt state files and checkpoints of another configuration."""
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from gclib.cli import main
from gclib.rundir import RunLock, RunLockedError
from gclib.train import train

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def tiny(run_dir, **kw):
    cfg = dict(name="rel", dataset="8gaussians", num_data=256, model="mlp", hidden=16, depth=1, emb_dim=8,
               sigma_max=5.0, s0=2, s1=8, distance="l2", flow="gc", mu=0.5, optimizer="adam", lr=1e-3, batch_size=32,
               total_steps=40, checkpoint_every=10, keep_checkpoints=2, eval_every=10, eval_n=64,
               eval_metrics=["w2"], sample_every=10, sample_n=16, progress=False, run_dir=str(run_dir))
    cfg.update(kw)
    return cfg


KILLER = textwrap.dedent("""
    import os, signal, sys, yaml
    import gclib.train as gt
    cfg = yaml.safe_load(open(sys.argv[1]))
    mode, at = sys.argv[2], int(sys.argv[3])
    if mode == "eval":           # inside the evaluation, before its row is written
        real = gt.save_samples
        def hook(x, path, ref=None):
            real(x, path, ref)
            if path.name == f"step-{at:08d}.png":
                os.kill(os.getpid(), signal.SIGKILL)
        gt.save_samples = hook
    else:                        # after the evaluation row and the samples, before the checkpoint
        real = gt.atomic_save
        def hook(obj, path):
            if obj["step"] == at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(obj, path)
        gt.atomic_save = hook
    gt.train(cfg)
""")


def _outputs(run_dir: Path):
    samples = {p.name: p.read_bytes() for p in sorted((run_dir / "samples").glob("*.png"))}
    ck = torch.load(run_dir / "checkpoints" / "ckpt-00000040.pt", weights_only=True)
    return (pd.read_csv(run_dir / "metrics.csv").drop(columns=["seconds", "samples_per_s"]),
            pd.read_csv(run_dir / "eval.csv"), samples, ck["model"], ck["ema"])


@pytest.mark.parametrize("mode", ["eval", "checkpoint"])
def test_kill_in_the_evaluation_window_then_resume_is_identical(tmp_path, mode):
    ref = _outputs(Path(train(tiny(tmp_path / "ref")).run_dir))
    cfg = tiny(tmp_path / "killed")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "killer.py").write_text(KILLER)
    p = subprocess.run([sys.executable, str(tmp_path / "killer.py"), str(tmp_path / "c.yaml"), mode, "20"],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert not (tmp_path / "killed" / "checkpoints" / "ckpt-00000020.pt").exists()
    got = _outputs(Path(train(cfg).run_dir))
    pd.testing.assert_frame_equal(ref[0], got[0])
    pd.testing.assert_frame_equal(ref[1], got[1])
    assert ref[1]["step"].tolist() == [10, 20, 30, 40]
    assert ref[2] == got[2] and sorted(ref[2]) == [f"step-{s:08d}.png" for s in (10, 20, 30, 40)]
    assert all(torch.equal(ref[3][k], got[3][k]) for k in ref[3]) and all(torch.equal(ref[4][k], got[4][k]) for k in ref[4])


def test_second_process_on_a_running_run_stops_at_once(tmp_path):
    cfg = tiny(tmp_path / "run", total_steps=20, eval_metrics=[], sample_every=0)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with RunLock(tmp_path / "run"):
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "gclib", "train", str(tmp_path / "c.yaml")], env=ENV,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and time.monotonic() - t0 < 60
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1 and "being trained by another process" in err and f"pid {os.getpid()}" in err
        assert not (tmp_path / "run" / "metrics.csv").exists()  # nothing touched
    # the lock is released: the run trains; a lock file left by a killed process (no flock held) is stale
    (tmp_path / "run" / "lock").write_text("pid 999999 on elsewhere since long ago\n")
    assert main(["train", str(tmp_path / "c.yaml")]) == 0
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["step"].tolist() == list(range(1, 21))


WAITER = textwrap.dedent("""
    import pathlib, sys, time, yaml
    from gclib.train import train
    cfg, here = yaml.safe_load(open(sys.argv[1])), pathlib.Path(sys.argv[2])
    def wait(step, model):  # at step 10: say so, then wait until the test lets the run go on
        if step == 10:
            (here / "waiting").touch()
            deadline = time.monotonic() + 120
            while not (here / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return {}
    train(cfg, eval_fns=[wait])
""")


def test_two_trainers_race_the_first_finishes_untouched(tmp_path):
    cfg = tiny(tmp_path / "run", total_steps=30, eval_metrics=[], eval_every=10, sample_every=0)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "waiter.py").write_text(WAITER)
    first = subprocess.Popen([sys.executable, str(tmp_path / "waiter.py"), str(tmp_path / "c.yaml"), str(tmp_path)],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "waiting").exists():
        time.sleep(0.01)
    assert (tmp_path / "waiting").exists() and first.poll() is None  # the first trainer is mid-run
    second = subprocess.run([sys.executable, "-m", "gclib", "train", str(tmp_path / "c.yaml")], env=ENV,
                            capture_output=True, text=True, timeout=300)
    (tmp_path / "go").touch()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2 and "being trained by another process" in second.stderr
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["step"].tolist() == list(range(1, 31))
    assert pd.read_csv(tmp_path / "run" / "eval.csv")["step"].tolist() == [10, 20, 30]


def test_with_the_lock_held_in_process_train_raises(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunLockedError, match="being trained by another process"):
            train(tiny(tmp_path / "run"))


def test_full_disk_is_one_line_and_loses_nothing(tmp_path):
    cfg = tiny(tmp_path / "run", eval_metrics=[], sample_every=0)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))

    def limit():  # every file of the process may grow to 16 kB: metrics.csv fits, a checkpoint does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))
    r = subprocess.run([sys.executable, "-m", "gclib", "train", str(tmp_path / "c.yaml")], env=ENV,
                       capture_output=True, text=True, timeout=300, preexec_fn=limit)
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, err[-2000:]
    assert "ckpt-00000010.pt" in err and "disk is full" in err
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["step"].tolist() == list(range(1, 11))
    assert not list((tmp_path / "run").rglob(".*.tmp"))  # the failed write left no temporary file
    assert main(["train", str(tmp_path / "c.yaml")]) == 0  # space again: the run completes
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["step"].tolist() == list(range(1, 41))


def test_truncated_done_json_is_named_and_the_run_completes(tmp_path):
    cfg = tiny(tmp_path / "run", eval_metrics=[], sample_every=0)
    train(cfg)
    (tmp_path / "run" / "done.json").write_text('{"config_hash": "ab')
    with pytest.warns(RuntimeWarning, match="done.json is unreadable"):
        res = train(cfg)
    assert json.loads((tmp_path / "run" / "done.json").read_text())["step"] == 40 and not res.skipped


def test_checkpoint_of_another_configuration_is_refused_unless_fresh(tmp_path, capsys):
    cfg = tiny(tmp_path / "run", eval_metrics=[], sample_every=0, total_steps=20)
    train(cfg)
    (tmp_path / "run" / "done.json").unlink()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(dict(cfg, lr=2e-3)))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "written by another configuration" in err and "resume=false" in err
    assert main(["train", str(tmp_path / "c.yaml"), "--fresh"]) == 0
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["step"].tolist() == list(range(1, 21))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions, so a read-only folder cannot be made")
def test_read_only_run_directory_is_one_line(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny(ro / "run")))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    assert "permission denied" in capsys.readouterr().err.lower()
