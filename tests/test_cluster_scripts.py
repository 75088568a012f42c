"""The SLURM scripts of docs/cluster.md, read from the page itself: each asks for a signal before its time limit
and for requeueing, writes its log into a folder the page creates first, and is valid bash; the array script,
run here with scontrol stubbed, passes the signal to gclib train, requeues itself, and its second run (what the
requeued job runs) ends with the weights of an uninterrupted run."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cluster.md"


def sbatch_scripts(text: str) -> dict:
    """{job name: script} of every bash block of the page that holds #SBATCH lines."""
    out = {}
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        if "#SBATCH" in block:
            name = re.search(r"^#SBATCH --job-name=(\S+)", block, re.M).group(1)
            out[name] = block
    return out


def problems(script: str, page: str) -> list:
    """What keeps a script from surviving its time limit and pre-emption, one line each."""
    opts = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", script, re.M))
    out = []
    sig = re.fullmatch(r"B:USR1@(\d+)", opts.get("signal") or "")
    if not sig or int(sig.group(1)) < 60:
        out.append(f"--signal={opts.get('signal')}: give B:USR1@<seconds>, at least 60 s before the limit")
    if "requeue" not in opts:
        out.append("no --requeue")
    if opts.get("open-mode") != "append":
        out.append("no --open-mode=append (a requeued job would overwrite its log)")
    folder = os.path.dirname(opts.get("output") or "")
    if not folder or f"mkdir -p {folder} && sbatch" not in page:
        out.append(f"--output={opts.get('output')}: its folder is not created before sbatch (mkdir -p {folder})")
    if not re.search(r"^trap '[^']*scontrol requeue \"\$SLURM_JOB_ID\"[^']*' USR1$", script, re.M):
        out.append("no USR1 trap that requeues the job")
    if not re.search(r"^trap '[^']*wait \"\$pid\"[^']*' TERM$", script, re.M):
        out.append("no TERM trap that waits for gclib train")
    if not re.search(r"&\npid=\$!\n", script) or not script.rstrip().endswith('wait "$pid"'):
        out.append("gclib train does not run in the background under wait (bash runs a trap only then)")
    return out


def test_every_sbatch_script_of_the_page_is_preemptible():
    page = DOC.read_text()
    scripts = sbatch_scripts(page)
    assert set(scripts) == {"gclib-cifar10-gc", "gclib-sweep"}
    for name, script in scripts.items():
        assert problems(script, page) == [], name
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)       # valid bash
    assert "srun torchrun" in scripts["gclib-cifar10-gc"] and "kill -TERM" in scripts["gclib-cifar10-gc"]
    # the checks fail on the scripts as they were before (no signal, no requeue, logs/ never created)
    old = scripts["gclib-sweep"]
    for line in ("#SBATCH --signal=B:USR1@300", "#SBATCH --requeue", "#SBATCH --open-mode=append"):
        old = "\n".join(ln for ln in old.splitlines() if not ln.startswith(line)) + "\n"
    found = problems(old, page.replace("mkdir -p logs && sbatch", "sbatch"))
    assert [p.split(":")[0].split(" (")[0] for p in found] == [
        "--signal=None", "no --requeue", "no --open-mode=append", "--output=logs/%x-%A_%a.out"]


def _fake_cluster(tmp_path: Path) -> dict:
    """A folder where the array script runs as on a compute node: .venv/bin/activate puts a `gclib` (this checkout,
    this Python) and a stub `scontrol` (it records its arguments) on PATH."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "gclib").write_text(f"#!/bin/sh\nexec {sys.executable} -m gclib \"$@\"\n")
    (bin_ / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    for f in ("gclib", "scontrol"):
        (bin_ / f).chmod(0o755)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "activate").write_text(f"export PATH={bin_}:$PATH\n")
    env = {k: v for k, v in os.environ.items() if k != "GCLIB_RUNS"}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "4242"}


def test_the_array_script_requeues_on_usr1_and_its_rerun_ends_as_an_uninterrupted_run(tmp_path, one_thread):
    from gclib.train import train
    script = sbatch_scripts(DOC.read_text())["gclib-sweep"]
    (tmp_path / "sweep.sh").write_text(script)
    env = _fake_cluster(tmp_path)
    cfg = tiny_config(tmp_path, total_steps=600, checkpoint_every=20, log_every=100, runs_dir="runs")
    (tmp_path / "sweep_configs").mkdir()
    (tmp_path / "sweep_configs" / "0.yaml").write_text(yaml.safe_dump(cfg))
    first = subprocess.Popen(["bash", "sweep.sh"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("runs/t-*/checkpoints/ckpt-*.pt")) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.02)
    first.send_signal(signal.SIGUSR1)                      # SLURM's --signal=B:USR1: to the batch script
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"       # back into the queue
    (run_dir,) = tmp_path.glob("runs/t-*")
    assert not (run_dir / "done.json").exists()            # stopped early: the signal reached gclib train
    second = subprocess.run(["bash", "sweep.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "resumed from step " in second.stdout and "finished: runs/t-" in second.stdout
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"       # the finished run does not requeue
    ref = train(dict(cfg, runs_dir=str(tmp_path / "ref")))
    assert ref.run_dir.name == run_dir.name
    got = torch.load(run_dir / "checkpoints" / "ckpt-00000600.pt", weights_only=True)
    want = torch.load(ref.checkpoint, weights_only=True)
    for part in ("model", "ema"):
        assert all(torch.equal(got[part][k], want[part][k]) for k in want[part]), part
