"""Long work you can watch: `gclib sample` and `gclib evaluate` report their progress on stderr, as lines off a
terminal (a file, a pipe, a batch log) and as a bar on one (gclib.progress)."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config
from gclib.progress import Progress

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_lines_off_a_terminal_at_the_first_update_every_interval_and_the_end():
    out, clock = io.StringIO(), Clock()
    p = Progress(10_000, "sampling", prefix="gclib evaluate", stream=out, every_s=10.0, clock=clock)
    for k in range(10):                  # 1000 a step, 3 s a step
        clock.t += 3.0
        p.update(1000)
    p.note("fd_digits 14.6 (3.0 s)")
    p.close()
    lines = out.getvalue().splitlines()
    assert lines == ["[gclib evaluate] sampling 1000/10000 (10%) | 3s elapsed | ETA 27s",
                     "[gclib evaluate] sampling 5000/10000 (50%) | 15s elapsed | ETA 15s",
                     "[gclib evaluate] sampling 9000/10000 (90%) | 27s elapsed | ETA 3s",
                     "[gclib evaluate] sampling 10000/10000 (100%) | 30s elapsed | ETA 0s",
                     "[gclib evaluate] fd_digits 14.6 (3.0 s)"]
    assert "\r" not in out.getvalue()


def test_a_bar_on_a_terminal():
    out = Terminal()
    with Progress(3000, "sampling", prefix="gclib sample", stream=out) as p:
        p.update(1024)
        p.note("a note above the bar")
        p.update(1976)
    text = out.getvalue()
    assert "\r" in text and "gclib sample: sampling" in text and "3000/3000" in text   # tqdm's bar, redrawn
    assert "[gclib sample] a note above the bar" in text
    assert "elapsed | ETA" not in text                                                     # no plain lines


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from gclib.train import train
    return train(tiny_config(tmp_path_factory.mktemp("p"), total_steps=10)).checkpoint


def test_sample_and_evaluate_report_progress_on_stderr_into_a_pipe(checkpoint, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gclib", "evaluate", str(checkpoint), "--metric", "w2", "--metric", "nn_dist",
           "--n", "2500"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 2500                          # stdout: the JSON alone
    err = r.stderr.splitlines()
    assert "\r" not in r.stderr
    assert err[0].startswith("[gclib evaluate] sampling 1024/2500 (41%) | ")
    assert err[-5].startswith("[gclib evaluate] sampling 2500/2500 (100%) | ")
    assert err[-4] == "[gclib evaluate] w2: 2500 samples against 512 data points ..."
    assert re.fullmatch(r"\[gclib evaluate\] w2 \S+ \(\d+\.\d s\)", err[-3])
    assert err[-2].startswith("[gclib evaluate] nn_dist: 2500 samples against ")
    assert re.fullmatch(r"\[gclib evaluate\] nn_dist \S+ \(\d+\.\d s\)", err[-1])
    from gclib.cli import main
    import contextlib
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        assert main(["sample", str(checkpoint), "--n", "100", "--out", str(tmp_path / "s.npz")]) == 0
    assert buf.getvalue().splitlines() == [ln for ln in buf.getvalue().splitlines() if ln.startswith("[gclib sample] ")]
    assert "[gclib sample] sampling 100/100 (100%) | " in buf.getvalue()
