"""gclib.executors: a tiny fid_curves sweep through submitit's local executor gives the in-process curves, finished
runs are never submitted, a failed job is named with its log, and bad executor settings fail in one line before
any work; `gclib train --submit ...` runs its training as a job."""
from __future__ import annotations

import pandas as pd
import pytest

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
