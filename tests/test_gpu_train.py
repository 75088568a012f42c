"""benchmarks/gpu_train.py, the pool that trains the GPU profiles' runs: its order (each profile's runs before the
next's, a frozen-predictor run after the run it reads), runs shared between profiles trained once, the deadline that
stops starting runs, and its one-line refusal of a profile that does not exist."""
from __future__ import annotations

import subprocess
import sys

import yaml

from nbhelpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_train  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "gpu_train.py"


def test_the_three_gpu_profiles_are_70_runs_in_order():
    sweeps, tasks = gpu_train.plan(["gpu_digits", "gpu_long_2x", "gpu_long_mu"])
    assert [name for name, _ in sweeps] == ["gpu_digits", "gpu_long_2x", "gpu_long_mu"]
    keys = [k for k, _, _ in tasks]
    assert len(keys) == len(set(keys)) == 30 + 15 + 25   # gpu_long_mu's IC, OT and GC(0.5) are gpu_digits' runs
    steps = [cfg["total_steps"] for _, cfg, _ in tasks]
    assert steps[:30] == [4000] * 30 and steps[30:45] == [8000] * 15 and steps[45:] == [4000] * 25
    frozen = [(i, needs) for i, (_, cfg, needs) in enumerate(tasks) if "frozen" in cfg["name"]]
    assert len(frozen) == 10 and [i for i, _ in frozen] == list(range(60, 70))
    ic0 = next(i for i, (_, cfg, _) in enumerate(tasks) if cfg["name"].endswith("-ic-s0"))
    assert {needs for _, needs in frozen} == {keys[ic0]} and ic0 < 30
    assert all(needs is None for _, cfg, needs in tasks if "frozen" not in cfg["name"])


def test_stacks_keep_the_order_and_group_only_runs_that_can_share_one():
    _, tasks = gpu_train.plan(["gpu_digits", "gpu_long_2x", "gpu_long_mu"])
    groups = gpu_train.stacks(tasks, 10)
    sizes = [len(keys) for keys, _, _ in groups]
    assert sum(sizes) == 70 and max(sizes) == 10
    assert [k for keys, _, _ in groups[:3] for k in keys] == [k for k, _, _ in tasks[:30]]  # gpu_digits: 3 stacks
    for keys, cfgs, needs in groups:
        assert len({c["total_steps"] for c in cfgs}) == 1              # 4000 and 8000 steps never share a stack
        frozen = {"frozen" in c["name"] for c in cfgs}
        assert len(frozen) == 1 and (needs != set()) == frozen.pop()    # frozen runs only with each other
    assert [len(keys) for keys, _, _ in gpu_train.stacks(tasks, 1)] == [1] * 70
    assert [k for keys, _, _ in gpu_train.stacks(tasks, 1) for k in keys] == [k for k, _, _ in tasks]


def test_deadline_starts_nothing_and_names_the_unfinished_profile(tmp_path):
    p = yaml.safe_load((ROOT / "params" / "fid_curves" / "gpu_digits.yaml").read_text())
    p.update(variant="_pytest-gpu-deadline", seeds=[0])
    p["overrides"] = {**p["overrides"], "device": "cpu", "total_steps": 20}
    f = tmp_path / "profile.yaml"
    f.write_text(yaml.safe_dump(p))
    r = subprocess.run([sys.executable, str(SCRIPT), str(f), "--workers", "2", "--deadline", "0"],
                       capture_output=True, text=True, timeout=300, env={"GCLIB_RUNS": str(tmp_path / "runs"),
                                                                          "PATH": "/usr/bin:/bin"})
    assert r.returncode == 3, r.stderr
    assert r.stdout.count("not started") == 3
    assert "_pytest-gpu-deadline: 3 of 3 runs unfinished; no final evaluation" in r.stdout
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("*/done.json"))


def test_a_missing_profile_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "no_such_profile"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        f"gpu_train.py: {ROOT / 'params' / 'fid_curves' / 'no_such_profile.yaml'} does not exist (a profile is a "
        "params/fid_curves/<name>.yaml or the path of such a file)"]
