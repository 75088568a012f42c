"""Faults a new or hostile user can cause, one row each (issue 20): nothing of the user's is ever destroyed, and
every fault ends in one line naming the file, key or extra, with the exit status the README promises.

``CLI_CASES`` run ``gclib.cli.main`` in-process: each row builds the situation and the argv, and states the exit
status, the words the one stderr line must hold, the words it must not hold, and what must be left untouched.
``API_CASES`` are the faults that meet the library rather than the command (notebook parameters, rotation,
permissions, the run lock). Everything trains tiny models, so the whole file runs in seconds.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import tiny_config
from gclib.cli import main
from gclib.train import train

HAS_CUDA = torch.cuda.is_available()


def cfg_dict(tmp: Path, **changes) -> dict:
    return tiny_config(tmp, **{"total_steps": 20, "checkpoint_every": 10, "keep_checkpoints": 2,
                               "run_dir": str(tmp / "run"), **changes})


def cfg_file(tmp: Path, **changes) -> str:
    p = tmp / "c.yaml"
    p.write_text(yaml.safe_dump(cfg_dict(tmp, **changes)))
    return str(p)


def snapshot(folder: Path) -> dict:
    """{relative path: bytes} of every file below ``folder`` (what must stay untouched)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """A finished tiny run (20 steps, checkpoints at 10 and 20) to copy, sample and evaluate."""
    d = tmp_path_factory.mktemp("trained")
    res = train(cfg_dict(d))
    return {"run": Path(res.run_dir), "ckpt": str(res.checkpoint), "cfg": cfg_dict(d)}


def copy_run(tmp: Path, fx, unfinished: bool = False) -> Path:
    run = tmp / "run"
    shutil.copytree(fx["run"], run)
    if unfinished:  # killed after its checkpoint at step 10
        (run / "done.json").unlink()
        (run / "checkpoints" / "ckpt-00000020.pt").unlink()
    return run


def no_spec(*names):
    """A replacement for importlib.util.find_spec under which the optional packages ``names`` are missing."""
    import importlib.util
    real = importlib.util.find_spec

    def find_spec(name, *a, **k):
        return None if name.split(".")[0] in names else real(name, *a, **k)
    return find_spec


# ----------------------------------------------------------------------------------------------------- the table
@dataclass
class Case:
    build: Callable            # (tmp, fixture dict, monkeypatch) -> argv
    code: int                  # exit status
    words: tuple               # the one stderr line holds each of these
    absent: tuple = ()         # ... and none of these
    keep: Callable | None = None   # (tmp) -> folder whose files must be byte-identical afterwards
    after: Callable | None = None  # (tmp, stdout) -> extra assertions
    gpu_free: bool = False     # only meaningful on a machine without CUDA


def foreign_folder(tmp, fx, mp):
    """A user's folder that is no gclib run: its files, including dot-temporaries deep inside, must survive."""
    d = tmp / "mine"
    (d / "sub").mkdir(parents=True)
    (d / "config.yaml").write_text("my: own config\n")
    (d / "metrics.csv").write_text("epoch,acc\n1,0.5\n")
    (d / "sub" / ".draft.tmp").write_text("unsaved work")
    (d / ".notes.tmp").write_text("more work")
    return ["train", cfg_file(tmp), "--run-dir", str(d)]


def foreign_with_one_file(tmp, fx, mp):
    (tmp / "mine").mkdir()
    (tmp / "mine" / "thesis.tex").write_text("\\section{}")
    return ["train", cfg_file(tmp), "--run-dir", str(tmp / "mine")]


def run_dir_is_file(tmp, fx, mp):
    (tmp / "afile").write_text("not a folder")
    return ["train", cfg_file(tmp), "--run-dir", str(tmp / "afile")]


def checkpoints_is_file(tmp, fx, mp):
    run = copy_run(tmp, fx, unfinished=True)
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("oops")
    return ["train", cfg_file(tmp)]


def garbage_metrics(tmp, fx, mp):
    run = copy_run(tmp, fx, unfinished=True)
    (run / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage\x80\x81" * 50)
    return ["train", cfg_file(tmp)]


def ctrl_c(tmp, fx, mp):
    import gclib.train as gt

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    mp.setattr(gt, "_train_step", interrupt)
    return ["train", cfg_file(tmp)]


def without(module, argv_fn):
    def build(tmp, fx, mp):
        import importlib.util
        mp.setattr(importlib.util, "find_spec", no_spec(module))
        return argv_fn(tmp, fx)
    return build


def deep_import_error(tmp, fx, mp):
    import gclib.train as gt

    def load_dataset(*a, **k):
        raise ModuleNotFoundError("No module named 'torchvision'", name="torchvision")
    mp.setattr(gt, "load_dataset", load_dataset)
    return ["train", cfg_file(tmp)]


def corrupt_cifar(tmp, fx, mp):
    from gclib.data import CIFAR10_FILES
    folder = tmp / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for f in CIFAR10_FILES:
        (folder / f).write_bytes(b"\x00garbage" * 100)
    return ["train", cfg_file(tmp, dataset="cifar10", data_root=str(tmp / "data"))]


def corrupt_mnist(tmp, fx, mp):
    from gclib.data import MNIST_FILES
    folder = tmp / "data" / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for f in MNIST_FILES:
        (folder / f).write_bytes(b"\x00\x00\x08\x03garbage")
    return ["train", cfg_file(tmp, dataset="mnist", data_root=str(tmp / "data"))]


def corrupt_imagenet32(tmp, fx, mp):
    from gclib.imagesets import IMAGENET32_FILES
    folder = tmp / "data" / "imagenet32"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in IMAGENET32_FILES:
        np.savez_compressed(folder / name, data=rng.integers(0, 255, (4, 3072), dtype=np.uint8))
    blob = bytearray((folder / IMAGENET32_FILES[3]).read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 40] = b"\x00" * 40            # the header is fine, the compressed data is not
    (folder / IMAGENET32_FILES[3]).write_bytes(bytes(blob))
    return ["train", cfg_file(tmp, dataset="imagenet32", data_root=str(tmp / "data"))]


def corrupt_npy_cache(tmp, fx, mp):
    folder = tmp / "data" / "celeba"
    folder.mkdir(parents=True)
    (folder / "celeba64_train_uint8.npy").write_bytes(b"\x93NUMPY\x01\x00garbage" * 10)
    return ["train", cfg_file(tmp, dataset="celeba64", data_root=str(tmp / "data"))]


def sample_png_without_matplotlib(tmp, fx, mp):
    import importlib.util
    mp.setattr(importlib.util, "find_spec", no_spec("matplotlib"))
    return ["sample", fx["ckpt"], "--n", "16", "--out", str(tmp / "f.png")]


def fresh_and_resume_in_file(tmp, fx, mp):
    p = Path(cfg_file(tmp))
    p.write_text(p.read_text() + "resume: true\n")
    return ["train", str(p), "--fresh"]


def older_gclib_run(tmp, fx, mp):
    """A run directory written before the marker existed (killed after step 10): adopted, and it resumes."""
    run = copy_run(tmp, fx, unfinished=True)
    (run / ".gclib-run").unlink()
    (run / "notes.txt").write_text("the user's own note")
    return ["train", cfg_file(tmp)]


def older_gclib_run_after(tmp, out):
    run = tmp / "run"
    assert (run / ".gclib-run").is_file() and (run / "notes.txt").read_text() == "the user's own note"
    assert pd.read_csv(run / "metrics.csv")["step"].tolist() == list(range(1, 21))


def stale_temporaries(tmp, fx, mp):
    """Cleaning up after a killed writer removes gclib's own temporaries, nothing else."""
    run = copy_run(tmp, fx, unfinished=True)
    (run / ".metrics.csv.abcd_123.tmp").write_text("half a write")
    (run / "checkpoints" / ".ckpt-00000020.pt.zzzzzzzz.tmp").write_bytes(b"half")
    (run / ".mine.tmp").write_text("user")
    (run / "checkpoints" / ".user-notes.tmp").write_text("user")
    (run / "sub").mkdir()
    (run / "sub" / ".metrics.csv.abcd_123.tmp").write_text("a user's file of the same shape, elsewhere")
    return ["train", cfg_file(tmp)]


def stale_temporaries_after(tmp, out):
    run = tmp / "run"
    assert not (run / ".metrics.csv.abcd_123.tmp").exists()
    assert not (run / "checkpoints" / ".ckpt-00000020.pt.zzzzzzzz.tmp").exists()
    assert (run / ".mine.tmp").read_text() == "user" and (run / "checkpoints" / ".user-notes.tmp").exists()
    assert (run / "sub" / ".metrics.csv.abcd_123.tmp").exists()


def nothing_written(tmp, out):
    assert not (tmp / "run").exists(), "a run directory was created before the fault was reported"


def untouched(name):
    return lambda tmp: tmp / name


def train_set(*kv, **changes):
    return lambda tmp, fx, mp: ["train", cfg_file(tmp, **changes)] + [a for k in kv for a in ("--set", k)]


CLI_CASES = {
    # --- data loss: a folder that is not gclib's is never written to, nor cleaned up
    "run dir: a user's folder": Case(foreign_folder, 2, ("mine", "not a gclib run", "nothing was written"),
                                     keep=untouched("mine")),
    "run dir: a user's folder with one file": Case(foreign_with_one_file, 2, ("thesis.tex", "not a gclib run"),
                                                   keep=untouched("mine")),
    "run dir: an older gclib run is adopted": Case(older_gclib_run, 0, (), after=older_gclib_run_after),
    "run dir: only gclib's temporaries are removed": Case(stale_temporaries, 0, (), after=stale_temporaries_after),
    "run dir is a file": Case(run_dir_is_file, 2, ("afile", "is a file"), keep=lambda t: t,
                              after=lambda t, o: (t / "afile").read_text() == "not a folder"),
    "checkpoints is a file": Case(checkpoints_is_file, 2, ("checkpoints", "is a file")),
    "run dir name too long": Case(lambda t, k, m: ["train", cfg_file(t), "--run-dir", str(t / ("x" * 300))], 2,
                                  ("x" * 300, "too long")),
    "garbage metrics.csv on resume": Case(garbage_metrics, 2, ("metrics.csv", "cannot be read")),
    # --- limits and cross-field checks before the first step (and before a byte is written)
    "fd_digits on 2-D data": Case(train_set("eval_metrics=[fd_digits]"), 2, ("eval_metrics", "fd_digits", "digits"),
                                  after=nothing_written),
    "kid_digits on 2-D data": Case(train_set("eval_metrics=[kid_digits]"), 2, ("kid_digits",), after=nothing_written),
    "fid on 2-D data": Case(train_set("eval_metrics=[fid]"), 2, ("eval_metrics", "'fid'", "2-D"),
                            after=nothing_written),
    "s1 above torch.multinomial's limit": Case(train_set("s1=33554432"), 2, ("s1=33554432", "2**24"),
                                               after=nothing_written),
    "p_mean far above the grid": Case(train_set("p_mean=100"), 2, ("p_mean=100", "multinomial"),
                                      after=nothing_written),
    "p_mean far below the grid": Case(train_set("p_mean=-100"), 2, ("p_mean=-100",), after=nothing_written),
    "rho that overflows the grid": Case(train_set("rho=0.001"), 2, ("rho=0.001",), after=nothing_written),
    "lr far too large": Case(train_set("lr=10"), 2, ("lr=10",), after=nothing_written),
    "hidden far too large": Case(train_set("hidden=1000000"), 2, ("hidden=1000000", "parameters"),
                                 after=nothing_written),
    "sample_n huge": Case(train_set("sample_n=100000000"), 2, ("sample_n",), after=nothing_written),
    "eval_n huge": Case(train_set("eval_n=100000000"), 2, ("eval_n",), after=nothing_written),
    "eval_n too large for exact OT": Case(train_set("eval_n=50000", "eval_metrics=[w2]"), 2, ("eval_n=50000", "w2"),
                                          after=nothing_written),
    "seed above 2**63 - 1": Case(train_set("seed=9223372036854775808"), 2, ("seed",), after=nothing_written),
    "seed near 2**63 trains": Case(train_set("seed=9223372036854775807", total_steps=4, checkpoint_every=0), 0, (),
                                   absent=("Overflow",)),
    "seed 2**50 trains": Case(train_set("seed=1125899906842624", total_steps=4, checkpoint_every=0), 0, ()),
    # --- the error boundary
    "--device cuda without a GPU (train)": Case(train_set("device=cuda"), 2, ("cuda", "not available"),
                                                after=nothing_written, gpu_free=True),
    "--device cuda without a GPU (sample)": Case(lambda t, k, m: ["sample", k["ckpt"], "--device", "cuda", "--out",
                                                                  str(t / "s.npz")], 2, ("--device cuda",),
                                                 gpu_free=True, after=lambda t, o: not (t / "s.npz").exists()),
    "Ctrl-C while training": Case(ctrl_c, 130, ("interrupted", "can be resumed")),
    "missing scikit-learn (moons)": Case(without("sklearn", lambda t, k: ["train", cfg_file(t, dataset="moons")]), 2,
                                         ("scikit-learn", "gclib[data]", "moons"), after=nothing_written),
    "missing torch-fidelity (fid)": Case(without("torch_fidelity", lambda t, k: [
        "train", cfg_file(t, dataset="digits", model="unet_digits", eval_metrics=["fid"])]), 2,
        ("torch-fidelity", "gclib[fid]"), after=nothing_written),
    "missing package deep inside": Case(deep_import_error, 2, ("torchvision", "gclib[data]")),
    "corrupt CIFAR-10": Case(corrupt_cifar, 2, ("cifar10", "corrupt", "data_batch_1"), absent=("not found",)),
    "corrupt MNIST": Case(corrupt_mnist, 2, ("mnist", "corrupt"), absent=("not found",)),
    "corrupt ImageNet 32 archive": Case(corrupt_imagenet32, 2, ("train_data_batch_4", "corrupt"),
                                        absent=("not found",)),
    "corrupt .npy cache": Case(corrupt_npy_cache, 2, ("celeba64_train_uint8.npy", "corrupt", "delete it"),
                               absent=("pickle", "not found")),
    "sample --sigmas nan": Case(lambda t, k, m: ["sample", k["ckpt"], "--sigmas", "nan", "--out", str(t / "s.npz")],
                                2, ("--sigmas", "finite"), after=lambda t, o: not (t / "s.npz").exists()),
    "sample --sigmas inf": Case(lambda t, k, m: ["sample", k["ckpt"], "--sigmas", "inf", "1", "--out",
                                                 str(t / "s.npz")], 2, ("--sigmas", "finite")),
    "sample --sigmas increasing": Case(lambda t, k, m: ["sample", k["ckpt"], "--sigmas", "1", "2", "--out",
                                                        str(t / "s.npz")], 2, ("--sigmas", "decreasing")),
    "sample --seed negative": Case(lambda t, k, m: ["sample", k["ckpt"], "--seed", "-1", "--out", str(t / "s.npz")],
                                   2, ("--seed",)),
    "sample --out f.png without matplotlib": Case(sample_png_without_matplotlib, 2, ("matplotlib", "gclib[notebooks]"),
                                                  after=lambda t, o: "wrote" not in o and not (t / "f.png").exists()),
    "sample: checkpoint is a folder": Case(lambda t, k, m: ["sample", str(t), "--out", str(t / "s.npz")], 2,
                                           ("does not exist", "folder")),
    "evaluate --out in a missing folder": Case(lambda t, k, m: ["evaluate", k["ckpt"], "--metric", "w2", "--out",
                                                                str(t / "no" / "e.json")], 2, ("e.json", "no")),
    "--fresh with --set resume=true": Case(lambda t, k, m: ["train", cfg_file(t), "--fresh", "--set", "resume=true"],
                                           2, ("--fresh", "resume=true", "conflicts"), after=nothing_written),
    "--fresh with resume: true in the file": Case(fresh_and_resume_in_file, 2, ("--fresh", "c.yaml", "conflicts"),
                                                  after=nothing_written),
    "reproduce --only misspelt": Case(lambda t, k, m: ["reproduce", "--only", "fid_curvs"], 2,
                                      ("fid_curvs", "valid choices", "fid_curves")),
    "reproduce --variant misspelt": Case(lambda t, k, m: ["reproduce", "--variant", "cpu_tinyy"], 2,
                                         ("cpu_tinyy", "valid choices")),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_fault_is_one_line(name, tmp_path, trained, capsys, monkeypatch):
    case = CLI_CASES[name]
    if case.gpu_free and HAS_CUDA:
        pytest.skip("needs a machine without CUDA")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GCLIB_RUNS", str(tmp_path / "runs"))
    argv = case.build(tmp_path, trained, monkeypatch)
    kept = case.keep(tmp_path) if case.keep else None
    before = snapshot(kept) if kept else None
    code = main(argv)
    out, err = capsys.readouterr()
    err = err.strip()
    assert code == case.code, (name, code, err[-3000:])
    if case.code:
        assert len(err.splitlines()) == 1, (name, err)
        assert err.startswith(f"gclib {argv[0]}: "), err
    for w in case.words:
        assert w in err, (name, w, err)
    for w in case.absent + ("Traceback",):
        assert w not in err, (name, w, err)
    if kept:
        after = snapshot(kept)
        assert after == before, (name, sorted(set(after) ^ set(before)))
        assert not (kept / ".gclib-run").exists() and not (kept / "lock").exists()
    if case.after:
        assert case.after(tmp_path, out) is not False, name


# ------------------------------------------------------------------------------------------------- library faults
def variant_path(tmp, fx):
    from gclib.experiments.params import check_param_values
    for v in ("../transport_cost/cpu", str(tmp / "elsewhere"), "a/b", "..", ".hidden"):
        with pytest.raises(ValueError, match="variant=.* is not a plain name"):
            check_param_values("transport_cost", {"variant": v})
    assert not (tmp / "elsewhere").exists()
    assert check_param_values("transport_cost", {"variant": "cpu_2"})["variant"] == "cpu_2"


def variant_in_a_running_notebook(tmp, fx):
    from gclib.experiments.params import check_params
    ns = {"In": ["# Parameters\nvariant = '../fid_curves/cpu'\n"], "variant": "../fid_curves/cpu"}
    with pytest.raises(ValueError, match="variant='../fid_curves/cpu' is not a plain name"):
        check_params("fid_curves", ns)


def base_config_path(tmp, fx):
    from gclib.experiments.params import check_param_values
    for v in ("/etc/passwd", "../../x.yaml", "params/../../x.yaml"):
        with pytest.raises(ValueError, match="base_config=.*relative to the project root"):
            check_param_values("fid_curves", {"base_config": v})


def every_shipped_variant_is_plain(tmp, fx):
    from gclib.experiments.params import check_param_values
    from gclib.report import project_root
    root = project_root()
    files = sorted((root / "params").glob("*/*.yaml"))
    checked = 0
    for p in files:
        if p.parent.name == "train":
            continue
        params = yaml.safe_load(p.read_text()) or {}
        check_param_values(p.parent.name, {k: v for k, v in params.items() if k in ("variant", "base_config")})
        checked += 1
    assert checked >= 4


def corrupt_newest_checkpoints(tmp, fx):
    """Corrupt files with higher steps than any good one never push a fresh checkpoint out: they are moved
    aside, and a run killed later resumes from its newest good checkpoint."""
    from gclib.rundir import claim_run_dir
    run = claim_run_dir(tmp / "run")           # a gclib run whose newest checkpoints became corrupt
    (run / "checkpoints").mkdir()
    for step in (90, 80):
        (run / "checkpoints" / f"ckpt-{step:08d}.pt").write_bytes(b"PK\x03\x04 corrupt" * 20)
    with pytest.warns(RuntimeWarning, match="moved aside"):
        train(cfg_dict(tmp, total_steps=30, keep_checkpoints=2))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["ckpt-00000020.pt", "ckpt-00000030.pt", "ckpt-00000080.pt.corrupt", "ckpt-00000090.pt.corrupt"]


def rotation_keeps_verified(tmp, fx):
    from gclib.checkpoint import ckpt_path, rotate
    d = tmp / "ck"
    shutil.copytree(fx["run"] / "checkpoints", d)
    ckpt_path(d, 30).write_bytes(b"truncated")
    with pytest.warns(RuntimeWarning, match="ckpt-00000030.pt is corrupt"):
        rotate(d, 1)
    assert sorted(p.name for p in d.iterdir()) == ["ckpt-00000020.pt", "ckpt-00000030.pt.corrupt"]
    ckpt_path(d, 30).write_bytes(b"truncated again")
    with pytest.warns(RuntimeWarning):
        rotate(d, 1)
    assert (d / "ckpt-00000030.pt.corrupt.1").read_bytes() == b"truncated again"  # nothing overwritten


def rotated_away_while_read(tmp, fx, monkeypatch=None):
    from gclib.checkpoint import CheckpointError, load_checkpoint
    p = tmp / "ckpt-00000010.pt"
    shutil.copy(fx["ckpt"], p)
    real = torch.load

    def vanish(path, *a, **k):
        Path(path).unlink()
        return real(path, *a, **k)
    torch.load = vanish
    try:
        with pytest.raises(CheckpointError, match="does not exist any more") as e:
            load_checkpoint(p)
    finally:
        torch.load = real
    assert "corrupt" not in str(e.value)


def atomic_write_permissions(tmp, fx):
    from gclib.io import write_text
    old = os.umask(0o022)
    try:
        p = write_text(tmp / "a.txt", "x")
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        p.chmod(0o640)
        write_text(p, "y")  # a replaced file keeps its permissions
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    run_files = [fx["run"] / "config.yaml", fx["run"] / "done.json", Path(fx["ckpt"])]
    assert all(stat.S_IMODE(f.stat().st_mode) & 0o044 == 0o044 for f in run_files)  # readable by others


def done_json_relative(tmp, fx):
    done = json.loads((fx["run"] / "done.json").read_text())
    assert done["checkpoint"] == "checkpoints/ckpt-00000020.pt"
    moved = tmp / "moved"
    shutil.copytree(fx["run"], moved)
    res = train({**fx["cfg"], "run_dir": str(moved)})
    assert res.skipped and Path(res.checkpoint) == moved / "checkpoints" / "ckpt-00000020.pt"


def done_json_absolute_of_older_gclib(tmp, fx):
    moved = tmp / "moved"
    shutil.copytree(fx["run"], moved)
    done = json.loads((moved / "done.json").read_text())
    done["checkpoint"] = "/somewhere/else/run/checkpoints/ckpt-00000020.pt"   # as older gclib wrote it
    (moved / "done.json").write_text(json.dumps(done))
    res = train({**fx["cfg"], "run_dir": str(moved)})
    assert res.skipped and Path(res.checkpoint) == moved / "checkpoints" / "ckpt-00000020.pt"


def waits_for_the_lock_then_reuses(tmp, fx):
    from gclib.rundir import RunLock, wait_for_run
    cfg = cfg_dict(tmp, total_steps=4, checkpoint_every=0)
    lock = RunLock(tmp / "run").acquire()          # "another process" trains the run
    said = []
    threading.Timer(0.3, lock.release).start()
    res = wait_for_run(lambda: train(cfg), tmp / "run", timeout=60, poll=0.05, say=said.append)
    assert len(said) == 1 and "waiting for it" in said[0] and res.step == 4
    again = wait_for_run(lambda: train(cfg), tmp / "run", timeout=0, say=said.append)
    assert again.skipped and len(said) == 1


def lock_wait_times_out(tmp, fx):
    from gclib.rundir import RunLock, RunLockedError, wait_for_run
    with RunLock(tmp / "run"):
        with pytest.raises(RunLockedError, match="still locked after waiting 0 s"):
            wait_for_run(lambda: train(cfg_dict(tmp)), tmp / "run", timeout=0.1, poll=0.05, say=lambda s: None)


def trained_model_waits(tmp, fx):
    from gclib.config import from_dict
    from gclib.experiments import common
    from gclib.rundir import RunLock
    cfg = from_dict(cfg_dict(tmp, total_steps=4, checkpoint_every=0))
    lock = RunLock(tmp / "run").acquire()
    threading.Timer(0.3, lock.release).start()
    ema, data, run_dir = common.trained_model(cfg)
    assert run_dir == tmp / "run" and (run_dir / "done.json").is_file()


def seed_streams_unchanged(tmp, fx):
    """Deriving generator seeds modulo 2**64 leaves every seed torch accepted before bit-identical."""
    from gclib.data import BatchIterator
    data = torch.arange(100.0)[:, None]
    for seed in (0, 7, 123456789):
        it = BatchIterator(data, 10, seed=seed)
        expect = torch.randperm(100, generator=torch.Generator().manual_seed(seed * 1_000_003))[:10]
        assert torch.equal(next(it)[:, 0], data[expect][:, 0])
    big = BatchIterator(data, 10, seed=2 ** 63 - 1)
    assert next(big).shape == (10, 1)


API_CASES = {
    "variant is a path": variant_path,
    "variant is a path in a running notebook": variant_in_a_running_notebook,
    "base_config outside the project": base_config_path,
    "every shipped parameter set passes": every_shipped_variant_is_plain,
    "corrupt newest checkpoints never push good ones out": corrupt_newest_checkpoints,
    "rotation keeps verified checkpoints, moves corrupt aside": rotation_keeps_verified,
    "checkpoint rotated away while read is not 'corrupt'": rotated_away_while_read,
    "atomic writes get ordinary permissions": atomic_write_permissions,
    "done.json stores a relative checkpoint": done_json_relative,
    "done.json of an older gclib still found": done_json_absolute_of_older_gclib,
    "a notebook waits for a locked run and reuses it": waits_for_the_lock_then_reuses,
    "waiting for a lock times out in one line": lock_wait_times_out,
    "trained_model waits for the lock": trained_model_waits,
    "seeds: large ones work, small ones unchanged": seed_streams_unchanged,
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_library_fault(name, tmp_path, trained, monkeypatch):
    monkeypatch.chdir(tmp_path)
    API_CASES[name](tmp_path, trained)


def test_the_table_is_large_enough():
    assert len(CLI_CASES) + len(API_CASES) >= 40
