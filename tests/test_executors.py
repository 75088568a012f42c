"""gclib.executors: a tiny fid_curves sweep through submitit's local executor gives the in-process curves, finished
runs are never submitted, a failed job is named with its log, and bad executor settings fail in one line before
any work; `gclib train --submit ...` runs its training as a job."""
from __future__ import annotations

import os
import re

import pandas as pd
import pytest
import torch

from conftest import tiny_config
from gclib import executors
from gclib.executors import JobFailedError, executor_spec, make_executor, parse_assignments

pytest.importorskip("submitit")

RUNS_KW = dict(eval_every=10, eval_metrics=["w2"], eval_n=64, total_steps=20)


def _runs():
    from gclib.experiments.fid_curves import Run
    return [Run("IC", 0, {"flow": "ic"}, "mu"), Run("GC mu=0.5", 0, {"flow": "gc", "mu": 0.5, "predictor": "ema"}, "mu")]


def test_tiny_sweep_through_submitit_local_equals_in_process(tmp_path, monkeypatch, one_thread):
    from gclib.experiments import fid_curves
    monkeypatch.setenv("OMP_NUM_THREADS", "1")     # the job processes: one torch thread, like this one
    here = fid_curves.train_sweep(tiny_config(tmp_path / "here", **RUNS_KW), _runs())
    folder = tmp_path / "jobs"
    spec = {"kind": "submitit", "cluster": "local", "folder": str(folder), "poll_s": 0.2}
    seen = []
    jobs = fid_curves.train_sweep(tiny_config(tmp_path / "jobs_runs", **RUNS_KW), _runs(), executor=spec,
                                  progress=lambda k, n, run, out: seen.append(run.label))
    assert sorted(seen) == ["GC mu=0.5", "IC"]
    assert list(jobs.step.unique()) == [10, 20] and jobs["w2"].notna().all()
    pd.testing.assert_frame_equal(here, jobs, check_exact=True)
    # the runs trained in the jobs: their run directories are under the jobs' runs_dir, and submitit kept its files
    assert len(list((tmp_path / "jobs_runs" / "runs").glob("t-*/done.json"))) == 2
    assert list(folder.glob("*_result.pkl")) and list(folder.glob("*_log.err"))

    # a second sweep over the finished runs submits nothing: they are read from their run directories
    def no_submit(*a, **k):
        raise AssertionError("a finished run was submitted")
    monkeypatch.setattr(executors.Submitit, "submit", no_submit)
    again = fid_curves.train_sweep(tiny_config(tmp_path / "jobs_runs", **RUNS_KW), _runs(), executor=spec)
    pd.testing.assert_frame_equal(again, jobs, check_exact=True)


TIMEOUTS = 4    # more than submitit's default requeue limit (3); the local executor starts a job at most 6 times


def _train_through_timeouts(cfg: dict, marks: str) -> tuple:
    """A training job that receives submitit's time-out signal at step 10 (k + 1) of its k-th start, k < TIMEOUTS:
    the signal SLURM sends before a job's time limit (``--signal``) and submitit's local executor sends before its
    ``timeout_min`` (USR2), here sent by the job to itself at a chosen step so the test is deterministic. submitit's
    handler then asks ``Job.checkpoint`` for the call to requeue (resume: true) and requeues it; the step's own
    checkpoint is not written yet (the signal comes in the step's evaluation, before its checkpoint), so each start
    resumes from the checkpoint 5 steps back and replays those steps."""
    import os
    import signal
    from pathlib import Path
    from gclib.train import train
    k = len(list(Path(marks).glob("start-*")))
    (Path(marks) / f"start-{k}").touch()

    def timeout_at(step, ema_model):
        if k < TIMEOUTS and step == 10 * (k + 1):
            os.kill(os.getpid(), signal.SIGUSR2)
        return {}
    res = train(cfg, eval_fns=[timeout_at])
    return str(res.run_dir), int(res.step), str(res.checkpoint), bool(res.skipped)


def _no_timeouts(step, ema_model):
    return {}


@pytest.fixture
def pickled_by_value():
    """The job functions of this module travel to the job by value (the job process cannot import a test module:
    its conftest would be the project root's)."""
    import sys
    import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_job_requeued_after_more_time_outs_than_the_default_ends_as_an_uninterrupted_run(
        tmp_path, monkeypatch, one_thread, pickled_by_value):
    """max_num_timeout reaches submitit: with 10, a LocalExecutor job that times out 4 times (one more than
    submitit's default limit, which would end it at the fourth) is requeued each time, resumes from its newest
    checkpoint and ends with the weights, optimiser state and logs of a run that was never interrupted."""
    import signal
    from pathlib import Path
    from gclib.train import train
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")) == signal.SIGUSR2
    kw = dict(total_steps=50, checkpoint_every=5, eval_every=5, keep_checkpoints=2)
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = {"cluster": "local", "folder": str(tmp_path / "jobs"), "poll_s": 0.2, "max_num_timeout": 10,
            "timeout_min": 10}   # a signal counts as a time-out when 80% of timeout_min or timeout_min - 10 min passed
    ex = make_executor(spec)
    assert ex.executor._executor.max_num_timeout == 10
    cfg = tiny_config(tmp_path / "job", **kw)
    (result,) = [r for _, r in ex.run(_train_through_timeouts, [(cfg, str(marks))], ["requeued"])]
    assert len(list(marks.glob("start-*"))) == TIMEOUTS + 1
    log = "".join(p.read_text() for p in (tmp_path / "jobs").glob("*_log.err"))
    assert len(re.findall(r"Caught signal SIGUSR2 on .*: this job is timed-out", log)) == TIMEOUTS
    ref = train(tiny_config(tmp_path / "ref", **kw), eval_fns=[_no_timeouts])
    assert result[1] == 50 and Path(result[0]).name == ref.run_dir.name     # the same run (hash), finished
    got = torch.load(result[2], weights_only=True)
    want = torch.load(ref.checkpoint, weights_only=True)
    for part in ("model", "ema"):
        assert all(torch.equal(got[part][k], want[part][k]) for k in want[part]), part
    opt_got, opt_want = _tensors(got["optimizer"]), _tensors(want["optimizer"])
    assert len(opt_got) == len(opt_want) > 0 and all(torch.equal(a, b) for a, b in zip(opt_got, opt_want))
    timing = ["seconds", "samples_per_s"]
    pd.testing.assert_frame_equal(pd.read_csv(Path(result[0]) / "metrics.csv").drop(columns=timing),
                                  pd.read_csv(ref.metrics_csv).drop(columns=timing), check_exact=True)
    assert (Path(result[0]) / "eval.csv").read_text() == ref.eval_csv.read_text()

    # submitit's default would have ended the job at its fourth time-out ("timed-out too many times"): the run above
    # finished only because max_num_timeout reached the executor
    default = make_executor({k: v for k, v in spec.items() if k != "max_num_timeout"})
    assert default.executor._executor.max_num_timeout == 3 < TIMEOUTS


def _tensors(obj):
    """Every tensor of a nested state (optimiser state dicts), in a fixed order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for k in sorted(obj, key=str) for t in _tensors(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def test_a_failed_job_is_named_with_its_error_and_log(tmp_path):
    from gclib.experiments.fid_curves import _train_one
    ex = make_executor({"cluster": "local", "folder": str(tmp_path / "jobs"), "poll_s": 0.2})
    bad = tiny_config(tmp_path, hidden=-3, name="broken")
    with pytest.raises(JobFailedError) as e:
        list(ex.run(_train_one, [(bad,)], ["broken-run"]))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("1 of 1 submitted jobs failed: broken-run (job ")
    assert "hidden" in msg and "ConfigError" in msg and "_log.err" in msg


def test_train_command_submits_a_job(tmp_path, capsys):
    import yaml
    from gclib.cli import main
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path, total_steps=10)))
    rc = main(["train", str(cfg), "--submit", "cluster=debug", "--submit", f"folder={tmp_path / 'jobs'}"])
    out = capsys.readouterr().out
    assert rc == 0 and "submitted 1 job through submitit (debug)" in out and "finished: " in out and "step 10" in out
    assert len(list((tmp_path / "runs").glob("t-*/done.json"))) == 1


@pytest.mark.parametrize("value, message", [
    ("slurmm", "executor kind='slurmm' is not valid; allowed values: 'local', 'submitit'"),
    ({"kind": "local", "folder": "x"}, "kind='local' takes only 'workers'; 'folder' belong to kind='submitit'"),
    ({"kind": "submitit", "timeout_mn": 60}, "executor parameter 'timeout_mn' is not one of gclib's"),
    ({"kind": "submitit", "slurm_partitoin": "gpu"}, "executor parameter 'slurm_partitoin'"),
    ({"kind": "submitit", "cluster": "pbs"}, "executor cluster='pbs' is not valid"),
    ({"kind": "submitit", "workers": 2}, "workers=... is for kind='local'"),
    ({"workers": 0}, "executor workers=0 is not valid"),
    ({"kind": "submitit", "max_num_timeout": -1}, "executor max_num_timeout=-1 is not valid; it must be a whole"),
    ({"kind": "submitit", "slurm_max_num_timeout": 2.5}, "executor slurm_max_num_timeout=2.5 is not valid"),
    ({"kind": "submitit", "max_num_timeout": 5, "local_max_num_timeout": 6}, "both set the requeue limit"),
    ({"kind": "submitit", "slurm_max_num_timeot": 6}, "executor parameter 'slurm_max_num_timeot' is not one of"),
    (3, "executor=3 is not valid"),
])
def test_bad_executor_settings_fail_in_one_line(value, message):
    with pytest.raises(ValueError) as e:
        executor_spec(value)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_spec_forms_and_defaults(tmp_path):
    assert executor_spec(None) == executor_spec("local") == executor_spec({})
    assert isinstance(make_executor(None), executors.InProcess) and isinstance(make_executor("local", 2),
                                                                                 executors.LocalPool)
    s = executor_spec({"folder": "jobs", "timeout_min": 600, "slurm_partition": "gpu", "gpus_per_node": 8})
    assert s.kind == "submitit" and s.cluster == "auto" and s.parameters == {
        "timeout_min": 600, "slurm_partition": "gpu", "gpus_per_node": 8}
    assert parse_assignments(["timeout_min=600", "wait=false", "slurm_partition=gpu"]) == {
        "timeout_min": 600, "wait": False, "slurm_partition": "gpu"}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_assignments(["timeout_min"])
    # SLURM needs a time limit: submitit's default (5 minutes) would cut every run short
    with pytest.raises(ValueError, match="give timeout_min"):
        executors.Submitit(executor_spec({"cluster": "slurm", "folder": str(tmp_path)}))
    # the requeue limit: gclib's max_num_timeout, or submitit's own names (refused before this issue)
    for given in (["max_num_timeout=10"], ["slurm_max_num_timeout=10"]):
        spec = executor_spec({"cluster": "local", "folder": str(tmp_path), **parse_assignments(given)})
        ex = executors.Submitit(spec)
        want = 10 if given[0].startswith("max") else 3        # slurm_...: the SLURM executor's, not the local one's
        assert ex.executor._executor.max_num_timeout == want
    assert executors.Submitit(executor_spec({"cluster": "local", "folder": str(tmp_path),
                                             "local_max_num_timeout": 7})).executor._executor.max_num_timeout == 7
    # a local job gets a week, not submitit's 2-minute default
    ex = executors.Submitit(executor_spec({"cluster": "local", "folder": str(tmp_path)}))
    assert ex.executor.parameters["timeout_min"] == executors.LOCAL_TIMEOUT_MIN


def test_sweep_parameter_executor_is_checked_before_any_work(tmp_path):
    from gclib.experiments.fid_curves import make_sweep
    kw = dict(root=None, workers=1)
    with pytest.raises(ValueError, match="executor parameter 'timeout_mn'"):
        make_sweep("t", "params/train/toy.yaml", {}, "w2", [0], [0.5], executor={"timeout_mn": 60}, **kw)
    with pytest.raises(ValueError, match="wait=false is for gclib train"):
        make_sweep("t", "params/train/toy.yaml", {}, "w2", [0], [0.5], executor={"cluster": "local", "wait": False},
                   **kw)
    sw = make_sweep("t", "params/train/toy.yaml", {}, "w2", [0], [0.5], executor={"cluster": "local"}, **kw)
    assert sw.executor == {"cluster": "local"}


def test_without_submitit_the_extra_is_named(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "submitit", None)   # import submitit -> ImportError
    with pytest.raises(ModuleNotFoundError) as e:
        executor_spec({"kind": "submitit", "timeout_min": 60})
    assert "pip install 'gclib[cluster]'" in str(e.value) and "\n" not in str(e.value)
    assert executor_spec("local").kind == "local"        # the local executor needs nothing
