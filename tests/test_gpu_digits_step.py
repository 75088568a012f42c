"""benchmarks/gpu_digits_step.py (where a digits training step spends its time on a GPU), dry-run on the CPU: each
measurement trains fresh runs in spawned processes and reads their step times; without CUDA it refuses in one line,
and MPS where it cannot start says so instead of measuring."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from nbhelpers import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_digits_step.py"


def test_cpu_dry_run_measures_each_flow_and_a_shared_pair(tmp_path):
    out = tmp_path / "step.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--steps", "10", "--share", "2",
                        "--modes", "single,share", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["machine"]["device"] == "cpu" and doc["steps"] == 10
    rows = doc["rows"]
    assert [(x["what"], x.get("flow"), x.get("processes")) for x in rows] == [
        ("single", "ic", None), ("single", "ot", None), ("single", "gc", None), ("share", None, 2)]
    assert all(x["step_ms"] > 0 for x in rows[:3])
    share = rows[3]
    assert share["mps"] is False and share["steps_per_s_together"] == pytest.approx(
        2 * 1e3 / share["step_ms_median"], rel=0.5)


def test_cpu_dry_run_of_a_stack_counts_fewer_calls_per_run(tmp_path):
    out = tmp_path / "stack.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--steps", "4", "--stack", "3",
                        "--modes", "profile,stack,stack_profile", "--out", str(out)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    one, stack, prof = json.loads(out.read_text())["rows"]
    assert (one["what"], stack["what"], prof["what"]) == ("profile", "stack", "stack_profile")
    assert stack["runs"] == prof["runs"] == 3 and stack["run_steps_per_s"] == pytest.approx(3e3 / stack["step_ms"],
                                                                                             rel=0.01)
    # the point of a stack: a step of 3 runs makes far fewer calls than 3 steps of one run (measured here: a step
    # of a stack of 10 makes 23,000 aten calls, one run's step 11,000)
    assert prof["aten_ops_per_step"] < 0.75 * 3 * one["aten_ops_per_step"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_without_cuda_in_one_line():
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        "gpu_digits_step.py: no CUDA device here (use --device cpu for the dry-run)"]


def test_an_unknown_mode_is_one_line():
    r = subprocess.run([sys.executable, str(SCRIPT), "--modes", "single,fast"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        "gpu_digits_step.py: unknown mode(s) ['fast']"]
