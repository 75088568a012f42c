"""gclib.reproduce bookkeeping: which runs a notebook trained (so a timing says what was cached) and the timing
table of results/README.md."""
import json
import os

from gclib.reproduce import finished_runs, write_results_readme
from nbhelpers import ROOT


def project(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "gclib"\n')
    (tmp_path / "results").mkdir()
    return tmp_path


def finish(root, name, ns=None):
    d = root / "runs" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "done.json").write_text("{}")
    if ns is not None:
        os.utime(d / "done.json", ns=(ns, ns))


def test_finished_runs_sees_new_and_refinished_runs_only(tmp_path):
    root = project(tmp_path)
    assert finished_runs(root) == set()
    finish(root, "a", ns=10**18)
    (root / "runs" / "unfinished").mkdir()
    before = finished_runs(root)
    assert {n for n, _ in before} == {"a"}
    finish(root, "b", ns=10**18)
    assert {n for n, _ in finished_runs(root) - before} == {"b"}        # a cached run does not count
    finish(root, "a", ns=2 * 10**18)                                    # a run finished again (--fresh) does
    assert {n for n, _ in finished_runs(root) - before} == {"a", "b"}


def test_timing_table_says_how_many_runs_were_trained(tmp_path):
    root = project(tmp_path)
    (root / "results" / "timings.json").write_text(json.dumps({"old/x": {"seconds": 7, "machine": "m"}}))
    write_results_readme(root, {"fid_curves/cpu": {"seconds": 12.4, "runs_trained": 0},
                                "toy_flows/cpu": 3.6})
    t = json.loads((root / "results" / "timings.json").read_text())
    assert t["fid_curves/cpu"]["seconds"] == 12 and t["fid_curves/cpu"]["runs_trained"] == 0
    assert t["toy_flows/cpu"]["seconds"] == 4 and "runs_trained" not in t["toy_flows/cpu"]
    text = (root / "results" / "README.md").read_text()
    assert "| notebook / variant | wall time (s) | runs trained | machine |" in text
    assert "| fid_curves/cpu | 12 | 0 |" in text and "| old/x | 7 | - | m |" in text and "| toy_flows/cpu | 4 | - |" in text
    # what is bit-identical and what is not, with the measured example and the command that checks it
    assert "**bit for bit** only on the platform that wrote them" in text and "0 of 53 verdicts changed" in text
    assert "gclib reproduce --compare" in text


def test_runs_another_process_finishes_meanwhile_are_not_the_notebooks(tmp_path, monkeypatch):
    # a background sweep finishing runs in the same cache while a notebook runs: only the runs whose done.json
    # carries the notebook's tag count as trained by it
    root = project(tmp_path)
    before = finished_runs(root, "nb-1")
    finish(root, "background", ns=10**18)
    d = root / "runs" / "mine"
    d.mkdir(parents=True)
    (d / "done.json").write_text(json.dumps({"trained_by": "nb-1"}))
    assert {n for n, _ in finished_runs(root, "nb-1") - before} == {"mine"}
    assert {n for n, _ in finished_runs(root) - before} == {"background", "mine"}


def test_a_trained_run_writes_the_reproduce_tag(tmp_path, monkeypatch):
    from gclib.config import load_config
    from gclib.train import train
    monkeypatch.setenv("GCLIB_TRAINED_BY", "nb-2")
    cfg = load_config(ROOT / "params" / "train" / "toy.yaml", {"total_steps": 3, "runs_dir": str(tmp_path),
                                                              "sample_every": 0, "checkpoint_every": 3})
    res = train(cfg)
    assert json.loads((res.run_dir / "done.json").read_text())["trained_by"] == "nb-2"
