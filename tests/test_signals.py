"""A scheduler's signal saves the run (gclib.signals): SIGTERM or SIGUSR1 during `gclib train` saves a checkpoint at
the step it is on, prints one line and exits 128 + the signal number; the resumed run ends with weights, optimiser,
metrics.csv, eval.csv, log.jsonl, sample pictures and the set of kept checkpoints identical to an uninterrupted run.
The same under torchrun (one rank signalled: both stop at the same step), in a stack, and in a submitit job
(submitit's pre-emption signal waits for the step, then submitit's own handler requeues)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from gclib import signals
from gclib.cli import main
from gclib.runlog import read_log
from gclib.train import train

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TIMING = ("time", "samples_per_s", "sec_per_step", "eta_s", "train_seconds")


def tiny(run_dir, **kw):
    cfg = dict(name="sig", dataset="8gaussians", num_data=256, model="mlp", hidden=16, depth=1, emb_dim=8,
               sigma_max=5.0, s0=2, s1=8, distance="l2", flow="gc", mu=0.5, optimizer="adam", lr=1e-3, batch_size=32,
               total_steps=40, checkpoint_every=10, keep_checkpoints=2, eval_every=10, eval_n=64, log_every=5,
               eval_metrics=["w2"], sample_every=10, sample_n=16, progress=False, run_dir=str(run_dir))
    cfg.update(kw)
    return cfg


def outputs(run_dir: Path) -> dict:
    """Everything a run leaves that must not depend on an interruption (timings left out)."""
    run_dir = Path(run_dir)
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    final = torch.load(run_dir / "checkpoints" / ckpts[-1], weights_only=True)
    log = [{k: v for k, v in r.items() if k not in TIMING} for r in read_log(run_dir / "log.jsonl")
           if r["event"] in ("train", "eval")]
    return {"checkpoints": ckpts, "final": final,
            "metrics": pd.read_csv(run_dir / "metrics.csv").drop(columns=["seconds", "samples_per_s"]),
            "eval": pd.read_csv(run_dir / "eval.csv") if (run_dir / "eval.csv").exists() else None,
            "samples": {p.name: p.read_bytes() for p in sorted((run_dir / "samples").glob("*.png"))}, "log": log}


def assert_same(ref: dict, got: dict) -> None:
    assert ref["checkpoints"] == got["checkpoints"]
    for part in ("model", "ema"):
        assert ref["final"][part].keys() == got["final"][part].keys()
        assert all(torch.equal(ref["final"][part][k], got["final"][part][k]) for k in ref["final"][part])
    for a, b in zip(ref["final"]["optimizer"]["state"].values(), got["final"]["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(ref["metrics"], got["metrics"])
    if ref["eval"] is not None:
        pd.testing.assert_frame_equal(ref["eval"], got["eval"])
    assert ref["samples"] == got["samples"] and ref["log"] == got["log"]


# The signal arrives in the middle of step `at` (inside the optimiser step): that step ends, its checkpoint is saved.
STOPPER = textwrap.dedent("""
    import os, signal, sys
    import gclib.train as gt
    from gclib.cli import main
    sig, at = getattr(signal, sys.argv[2]), int(sys.argv[3])
    real = gt.train_step
    def step(*a, **k):
        if k["step"] == at - 1:
            os.kill(os.getpid(), sig)
        return real(*a, **k)
    gt.train_step = step
    sys.exit(main(sys.argv[4:] + ["train", sys.argv[1]]))
""")


@pytest.mark.parametrize("sig, at, flow", [("SIGTERM", 15, "gc"), ("SIGUSR1", 27, "ot")])
def test_signal_saves_the_step_and_the_resumed_run_is_identical(tmp_path, sig, at, flow):
    ref = outputs(train(tiny(tmp_path / "ref", flow=flow)).run_dir)
    cfg = tiny(tmp_path / "run", flow=flow)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "stop.py").write_text(STOPPER)
    r = subprocess.run([sys.executable, str(tmp_path / "stop.py"), str(tmp_path / "c.yaml"), sig, str(at)], env=ENV,
                       capture_output=True, text=True, timeout=300)
    signum = getattr(signal, sig)
    err = r.stderr.strip()
    assert r.returncode == 128 + signum, err[-2000:]
    assert len(err.splitlines()) == 1 and err.startswith("gclib train: stopped by"), err
    ckpt = tmp_path / "run" / "checkpoints" / f"ckpt-{at:08d}.pt"
    assert sig in err and f"step {at}" in err and str(ckpt) in err and "run the same command again" in err
    saved = torch.load(ckpt, weights_only=True)
    assert saved["step"] == at and saved["off_schedule"] is True
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["step"].tolist() == list(range(1, at + 1))
    assert not (tmp_path / "run" / "done.json").exists() and not list((tmp_path / "run").rglob(".*.tmp"))
    assert main(["train", str(tmp_path / "c.yaml")]) == 0   # resumes from step `at`
    resumed = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["event"] == "resume"]
    assert [r["step"] for r in resumed] == [at]
    assert_same(ref, outputs(tmp_path / "run"))


def test_a_signal_before_the_loop_stops_at_once(tmp_path, capsys, monkeypatch):
    """Outside the training loop (data loading, set-up) the signal stops the command at once: one line, 143."""
    import gclib.train as gt
    real = gt._setup

    def setup(st, data):
        real(st, data)
        signal.raise_signal(signal.SIGTERM)
    monkeypatch.setattr(gt, "_setup", setup)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny(tmp_path / "run")))
    assert main(["train", str(tmp_path / "c.yaml")]) == 143
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "SIGTERM" in err and "run the same command again" in err
    assert not (tmp_path / "run" / "metrics.csv").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # the handlers are restored


def test_a_second_signal_does_not_wait_for_the_step():
    with signals.handle():
        with signals.at_step_boundaries():
            signal.raise_signal(signal.SIGTERM)
            assert signals.requested() == signal.SIGTERM
            with pytest.raises(signals.Terminated) as e:
                signal.raise_signal(signal.SIGUSR1)
    assert e.value.exit_status == 128 + signal.SIGUSR1 and signals.requested() == 0


def test_stack_stops_every_run_at_one_step(tmp_path, capsys, monkeypatch):
    from gclib.stack import train_stack
    base = {**tiny(None, runs_dir=str(tmp_path / "ref"), total_steps=30), "run_dir": None}
    train_stack([{**base, "seed": s} for s in (0, 1)])   # the uninterrupted reference
    cfg = {**base, "runs_dir": str(tmp_path / "runs")}
    del cfg["run_dir"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    import gclib.stack as gs
    real = gs._Stack.step

    def step(self, k):
        if k == 13:
            signal.raise_signal(signal.SIGUSR1)
        return real(self, k)
    monkeypatch.setattr(gs._Stack, "step", step)
    assert main(["train", str(tmp_path / "c.yaml"), "--seeds", "0", "1", "--stack"]) == 128 + signal.SIGUSR1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "step 13" in err and "2 checkpoints" in err
    monkeypatch.setattr(gs._Stack, "step", real)
    assert main(["train", str(tmp_path / "c.yaml"), "--seeds", "0", "1", "--stack"]) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    refs = sorted((tmp_path / "ref").iterdir())
    assert [p.name for p in runs] == [p.name for p in refs]
    for a, b in zip(refs, runs):
        assert_same(outputs(a), outputs(b))


def test_submitit_signal_waits_for_the_step_then_submitit_requeues(tmp_path, monkeypatch):
    """In a submitit job the pre-emption signal (SIGUSR2) is held until the step ends, the checkpoint of that step
    is saved, then submitit's own handler runs (here a stand-in recording the call, as submitit's requeues and
    exits); the requeued call resumes and ends as an uninterrupted run."""
    pytest.importorskip("submitit")
    from gclib import executors
    import gclib.train as gt
    ref = outputs(train(tiny(tmp_path / "ref")).run_dir)
    cfg = tiny(tmp_path / "run")
    calls = []

    def submitits_handler(signum, frame):
        calls.append(signum)
        assert not (tmp_path / "run" / "lock").read_text().strip()   # the run was released first
        raise SystemExit(-1)
    monkeypatch.setattr(executors, "_preemption_signals", lambda: (signal.SIGUSR2,))
    old = signal.signal(signal.SIGUSR2, submitits_handler)
    real = gt.train_step

    def step(*a, **k):
        if k["step"] == 21:
            signal.raise_signal(signal.SIGUSR2)
        return real(*a, **k)
    monkeypatch.setattr(gt, "train_step", step)
    job = executors.Job(executors._train_call, str(tmp_path))
    try:
        with pytest.raises(SystemExit):
            job(cfg)
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert calls == [signal.SIGUSR2] and (tmp_path / "run" / "checkpoints" / "ckpt-00000022.pt").is_file()
    requeued = job.checkpoint(cfg)   # what submitit's handler asks for: the same call, resume: true
    monkeypatch.setattr(gt, "train_step", real)
    requeued.result()
    assert_same(ref, outputs(tmp_path / "run"))


DDP_WORKER = textwrap.dedent("""
    import os, signal, sys
    import torch.distributed as dist
    import yaml
    from gclib import signals
    import gclib.train as gt
    dist.init_process_group("gloo")          # once, for the three trainings below
    rank = dist.get_rank()
    cfg = yaml.safe_load(open(sys.argv[1]))
    gt.train({**cfg, "run_dir": "ref"})      # uninterrupted
    real = gt.train_step
    def step(*a, **k):                       # only rank 1 is signalled, inside step 3
        if rank == 1 and k["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)
    gt.train_step = step
    with signals.handle():
        try:
            gt.train({**cfg, "run_dir": "run"})
        except signals.TrainingStopped as e:
            print(f"rank {rank} stopped at {e.step}", flush=True)
    gt.train_step = real
    gt.train({**cfg, "run_dir": "run"})       # resumed
    res = gt.train({**cfg, "run_dir": None, "runs_dir": "runs"})   # a 1-process run of these settings is there
    print(f"rank {rank} default run: {res.run_dir.name} skipped={res.skipped}", flush=True)
    gt.train({**cfg, "flow": "gc", "run_dir": "gc1"})   # a 1-process GC checkpoint resumed on 2: warned once
    dist.destroy_process_group()
""")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_ranks_agree_on_the_step(tmp_path):
    cfg = tiny(None, flow="ot", batch_size=16, total_steps=6, checkpoint_every=4, eval_every=0, eval_metrics=[],
               sample_every=0, log_every=1, device="cpu")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "w.py").write_text(DDP_WORKER)
    one = train({**cfg, "run_dir": None, "runs_dir": str(tmp_path / "runs")})   # the same settings on 1 process
    gc1 = tmp_path / "gc1"
    train({**cfg, "flow": "gc", "run_dir": str(gc1), "keep_checkpoints": 5})
    (gc1 / "done.json").unlink()
    (gc1 / "checkpoints" / "ckpt-00000006.pt").unlink()       # as if killed after its checkpoint at step 4
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(tmp_path / "w.py"), str(tmp_path / "c.yaml")], cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rank 0 stopped at 3" in r.stdout and "rank 1 stopped at 3" in r.stdout
    done = json.loads((tmp_path / "run" / "done.json").read_text())
    assert done["world_size"] == 2
    assert [x["step"] for x in read_log(tmp_path / "run" / "log.jsonl") if x["event"] == "resume"] == [3]
    assert_same(outputs(tmp_path / "ref"), outputs(tmp_path / "run"))
    # OT pairs per rank: on 2 processes these settings are another run (its own directory), not "already finished"
    other = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name != one.run_dir.name)
    assert len(other) == 1 and f"rank 0 default run: {other[0]} skipped=False" in r.stdout
    assert json.loads((tmp_path / "runs" / other[0] / "done.json").read_text())["world_size"] == 2
    assert r.stderr.count("holds RNG states of 1 processes, this run has 2") == 1   # one warning, not one per rank
    assert json.loads((gc1 / "done.json").read_text())["world_size"] == 2


def test_the_stop_exceptions_cross_a_process_boundary():
    """A worker process sends its TrainingStopped (or Terminated) back to its pool pickled: rebuilt whole."""
    import pickle
    e = signals.TrainingStopped(signal.SIGTERM, ["runs/a"], 17, ["runs/a/checkpoints/ckpt-00000017.pt"])
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is signals.TrainingStopped and str(back) == str(e)
    assert (back.signum, back.run_dirs, back.step, back.checkpoints) == (e.signum, e.run_dirs, e.step, e.checkpoints)
    t = pickle.loads(pickle.dumps(signals.Terminated(signal.SIGUSR1, "stopped by SIGUSR1 while loading")))
    assert t.exit_status == 128 + signal.SIGUSR1 and str(t) == "stopped by SIGUSR1 while loading"


def test_a_pool_worker_waits_for_its_step_when_stopped_twice():
    """``install(repeat_aborts=False)`` (a pool's worker: the scheduler and the pool may both stop it): a second
    signal while the first waits for its step waits too; outside a training loop a signal still stops at once."""
    old = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
    try:
        signals.install(repeat_aborts=False)
        with signals.at_step_boundaries():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGUSR1)          # no Terminated: the first request stands
            assert signals.requested() == signal.SIGTERM
        signals.clear()
        with pytest.raises(signals.Terminated):
            signal.raise_signal(signal.SIGTERM)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        signals._state.repeat_aborts = True
        signals.clear()


# a plugin module that slows each training step by 5 ms in the pool's workers (worker_init imports the plugins), so
# both runs are surely mid-way when the stop comes; the bits trained are the same
SLOW_PLUGIN = textwrap.dedent("""
    import time
    import gclib.train as gt
    _real = gt.train_step
    def _slow(*a, **k):
        time.sleep(0.005)
        return _real(*a, **k)
    gt.train_step = _slow
""")
# a sweep's two runs in a LocalPool of 2 workers; this process (the pool's parent, under gclib's handler as the CLI
# is) is sent SIGTERM once both runs have trained 20 steps: nothing else is signalled
POOL_STOPPER = textwrap.dedent("""
    import os, signal, sys, threading, time
    from pathlib import Path
    import yaml
    from gclib import signals
    from gclib.executors import LocalPool
    from gclib.train import train
    cfgs = [yaml.safe_load(Path(p).read_text()) for p in sys.argv[1:] if p.endswith(".yaml")]
    def rows(c):
        f = Path(c["run_dir"]) / "metrics.csv"
        return len(f.read_text().splitlines()) - 1 if f.exists() else 0
    def watch():
        while min(rows(c) for c in cfgs) < 20:
            time.sleep(0.01)
        print("stopping at", [rows(c) for c in cfgs], file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
    if __name__ == "__main__":   # the spawned workers import this file as their main module
        with signals.handle():
            threading.Thread(target=watch, daemon=True).start()
            try:
                for i, res in LocalPool(2).run(train, [(c,) for c in cfgs]):
                    print("finished", i, flush=True)
            except signals.Terminated as e:
                print(f"stopped: {e}", file=sys.stderr)
                sys.exit(e.exit_status)
""")


def test_a_stopped_pool_saves_each_running_run_at_its_step(tmp_path):
    """SIGTERM to a LocalPool's parent only (a user's kill, a scheduler that signals the batch step): the pool
    forwards it, each worker saves a checkpoint at the step it is on and stops, the parent exits 143; the two runs
    resumed end identical to uninterrupted ones. Before, a worker had no handler: killed where it was, it lost every
    step since its last scheduled checkpoint."""
    cfgs = [tiny(tmp_path / name, seed=seed, total_steps=300, checkpoint_every=150, eval_every=100, sample_every=150)
            for name, seed in (("a", 0), ("b", 1))]
    refs = [outputs(train({**c, "run_dir": str(tmp_path / f"ref_{i}")}).run_dir) for i, c in enumerate(cfgs)]
    for i, c in enumerate(cfgs):
        (tmp_path / f"c{i}.yaml").write_text(yaml.safe_dump(c))
    (tmp_path / "slowstep.py").write_text(SLOW_PLUGIN)
    (tmp_path / "stop.py").write_text(POOL_STOPPER)
    env = {**ENV, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}", "GCLIB_PLUGINS": "slowstep"}
    r = subprocess.run([sys.executable, str(tmp_path / "stop.py"), str(tmp_path / "c0.yaml"), str(tmp_path / "c1.yaml")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 143, r.stderr[-3000:]
    assert "finished" not in r.stdout and "SIGTERM" in r.stderr
    for c, ref in zip(cfgs, refs):
        run = Path(c["run_dir"])
        assert not (run / "done.json").exists()
        done = len(pd.read_csv(run / "metrics.csv"))
        assert 20 <= done < 300
        saved = torch.load(run / "checkpoints" / f"ckpt-{done:08d}.pt", weights_only=True)
        assert saved["step"] == done and saved["off_schedule"] is True   # saved where it stopped, not at 150
        train(c)                                                         # resumes from that step
        assert [e["step"] for e in read_log(run / "log.jsonl") if e["event"] == "resume"] == [done]
        assert_same(ref, outputs(run))
