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
    same: Callable | None = None   # (tmp) -> a folder (gclib's own, say a run) whose files must be byte-identical


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


# ------------------------------------------------------------------------------------ issue 31: the CLI's faults
def finished_run_at(tmp, fx, where):
    """The finished fixture run copied to ``tmp/where`` (a run of the same configuration hash as cfg_file's)."""
    shutil.copytree(fx["run"], tmp / where)
    return tmp / where


def done_in(where):
    return lambda tmp, out: (tmp / where / "done.json").is_file()


def run_dir_with_hash_sign(tmp, fx, mp):
    """`--run-dir "runs/exp2 #2" --fresh` next to the run runs/exp2: a new run, runs/exp2 untouched."""
    finished_run_at(tmp, fx, "runs/exp2")
    return ["train", cfg_file(tmp), "--run-dir", "runs/exp2 #2", "--fresh"]


def run_dir_word(word):
    return lambda tmp, fx, mp: ["train", cfg_file(tmp), "--run-dir", word]


def home_with_notes(tmp, mp):
    home = tmp / "home"
    home.mkdir()
    (home / "notes.txt").write_text("the user's own")
    mp.setenv("HOME", str(home))
    return home


def run_dir_tilde(tmp, fx, mp):
    home_with_notes(tmp, mp)
    return ["train", cfg_file(tmp), "--run-dir", "~"]


def run_dir_under_home(tmp, fx, mp):
    home_with_notes(tmp, mp)
    return ["train", cfg_file(tmp), "--run-dir", "~/exp"]


def stop_in_step(at: int, sig=None):
    """Patch the optimiser step so that signal ``sig`` (SIGTERM) arrives in the middle of step ``at``."""
    import signal as sg

    def build(tmp, fx, mp):
        import gclib.train as gt
        real = gt.train_step

        def step(*a, **k):
            if k["step"] == at - 1:
                sg.raise_signal(sig or sg.SIGTERM)
            return real(*a, **k)
        mp.setattr(gt, "train_step", step)
        return ["train", cfg_file(tmp)]
    return build


def stopped_at(at):
    def after(tmp, out):
        ck = torch.load(tmp / "run" / "checkpoints" / f"ckpt-{at:08d}.pt", weights_only=True)
        assert ck["step"] == at and not (tmp / "run" / "done.json").exists()
        assert pd.read_csv(tmp / "run" / "metrics.csv")["step"].tolist() == list(range(1, at + 1))
        assert "finished" not in out
    return after


def signal_in(module_attr: str, argv_fn):
    """SIGTERM from inside ``module.attr`` (e.g. the sampling of `gclib evaluate`)."""
    import signal as sg

    def build(tmp, fx, mp):
        import importlib
        mod_name, attr = module_attr.rsplit(".", 1)
        mod = importlib.import_module(mod_name)
        real = getattr(mod, attr)

        def stopped(*a, **k):
            sg.raise_signal(sg.SIGTERM)
            return real(*a, **k)
        mp.setattr(mod, attr, stopped)
        (tmp / "prev.out").write_text("the previous output\n")
        return argv_fn(tmp, fx)
    return build


def prev_out_kept(tmp, out):
    assert (tmp / "prev.out").read_text() == "the previous output\n" and not list(tmp.glob(".prev.out.*"))


def seeds_stop_between_runs(tmp, fx, mp):
    """SIGTERM in the last step of seed 0's run: that run finishes, the command stops before seed 1 trains."""
    import signal as sg
    import gclib.train as gt
    real = gt.train_step

    def step(*a, **k):
        if k["step"] == 19 and not list((tmp / "runs").glob("*/done.json")):
            sg.raise_signal(sg.SIGTERM)
        return real(*a, **k)
    mp.setattr(gt, "train_step", step)
    d = cfg_dict(tmp)
    del d["run_dir"]
    (tmp / "s.yaml").write_text(yaml.safe_dump(d))
    return ["train", str(tmp / "s.yaml"), "--seeds", "0", "1"]


def seeds_after(tmp, out):
    assert len(list((tmp / "runs").glob("*/done.json"))) == 1 and len(list((tmp / "runs").iterdir())) == 1


def reproduce_stopped(tmp, fx, mp):
    """SIGTERM while reproduce runs a notebook: the committed results/toy_flows/cpu/ stay byte for byte."""
    import signal as sg
    import papermill

    def execute(nb, out, **k):
        Path(out).write_text("half an executed notebook")
        sg.raise_signal(sg.SIGTERM)
    mp.setattr(papermill, "execute_notebook", execute)
    return ["reproduce", "--only", "toy_flows", "--variant", "cpu"]


def project_results(nb, variant):
    from gclib.report import project_root
    return lambda tmp: project_root() / "results" / nb / variant


def no_staged_left(nb):
    def after(tmp, out):
        from gclib.report import project_root
        assert not [p for p in (project_root() / "results" / nb).iterdir() if p.name.startswith(".")]
    return after


def other_dataset_predictor(tmp, fx, mp):
    """A frozen predictor of the 2-D toy for a digits run: refused at set-up (today: a matmul error at step 1)."""
    return ["train", cfg_file(tmp, dataset="digits", model="unet_digits", flow="gc", predictor=fx["ckpt"],
                                 batch_size=8, total_steps=2)]


def same_shape_other_data_predictor(tmp, fx, mp):
    return ["train", cfg_file(tmp, dataset="8gaussians", flow="gc", predictor=fx["ckpt"])]


def other_network_init(tmp, fx, mp):
    return ["train", cfg_file(tmp, init_checkpoint=fx["ckpt"], hidden=32)]


def runs_env(value_fn, argv):
    def build(tmp, fx, mp):
        mp.setenv("GCLIB_RUNS", str(value_fn(tmp)))
        return list(argv)
    return build


def a_file(tmp):
    (tmp / "cache.txt").write_text("not a folder")
    return tmp / "cache.txt"


def broken_package(tmp, mp, package: str, error: str) -> None:
    """An installed ``package`` whose import fails (a missing shared library): a stand-in first on sys.path."""
    import importlib
    import sys
    fake = tmp / "site" / package
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ImportError({error!r})\n")
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        mp.delitem(sys.modules, name)
    mp.syspath_prepend(str(tmp / "site"))
    importlib.invalidate_caches()


def broken_sklearn(tmp, fx, mp):
    broken_package(tmp, mp, "sklearn", "libgomp.so.1: cannot open shared object file: No such file or directory")
    return ["train", cfg_file(tmp, dataset="moons")]


def broken_matplotlib(tmp, fx, mp):
    broken_package(tmp, mp, "matplotlib", "libfreetype.so.6: cannot open shared object file")
    return ["sample", fx["ckpt"], "--n", "16", "--out", str(tmp / "f.png")]


def full_disk_for(module: str, name: str):
    """Appending to the run's ``name`` (metrics.csv, log.jsonl) hits a full disk (the file is /dev/full)."""
    def build(tmp, fx, mp):
        import builtins
        import importlib
        mod = importlib.import_module(module)

        def fake_open(path, mode="r", *a, **k):
            if str(path).endswith(name) and "a" in mode:
                return builtins.open("/dev/full", "w")
            return builtins.open(path, mode, *a, **k)
        mp.setattr(mod, "open", fake_open, raising=False)
        return ["train", cfg_file(tmp)]
    return build


def ot_run_on_other_world(tmp, fx, mp):
    """A toy OT run finished on one process, then `torchrun --nproc_per_node=2` with the same arguments."""
    train(cfg_dict(tmp, flow="ot"))
    mp.setenv("WORLD_SIZE", "2")
    mp.setenv("RANK", "0")
    return ["train", cfg_file(tmp, flow="ot")]


CLI_CASES.update({
    # --- issue 31: paths are paths (never YAML), a path that cannot be a run directory is refused
    "--run-dir with ' #' is not cut at the '#'": Case(run_dir_with_hash_sign, 0, (), same=lambda t: t / "runs/exp2",
                                                      after=done_in("runs/exp2 #2")),
    "--run-dir 2024 is a folder": Case(run_dir_word("2024"), 0, (), after=done_in("2024")),
    "--run-dir on is a folder": Case(run_dir_word("on"), 0, (), after=done_in("on")),
    "--run-dir 'a: b' is a folder": Case(run_dir_word("a: b"), 0, (), after=done_in("a: b")),
    "--run-dir null is a folder, not 'no run dir'": Case(run_dir_word("null"), 0, (), after=done_in("null")),
    "--run-dir ~ is the home folder (refused)": Case(run_dir_tilde, 2, ("home", "not a gclib run", "notes.txt"),
                                                     keep=untouched("home"), after=lambda t, o: not (t / "runs").exists()),
    "--run-dir ~/exp expands ~": Case(run_dir_under_home, 0, (), after=done_in("home/exp")),
    "--run-dir '' is refused": Case(run_dir_word(""), 2, ("--run-dir",), after=lambda t, o: not (t / "runs").exists()),
    "--set run_dir with ' #'": Case(train_set("run_dir=runs/x #y"), 0, (), after=done_in("runs/x #y")),
    "--set data_root=2024 is a path": Case(train_set("data_root=2024"), 0, ()),
    "--submit folder with ' #'": Case(lambda t, k, m: ["train", cfg_file(t), "--submit", "cluster=debug", "--submit",
                                                       "folder=jobs #1"], 0, (),
                                      after=lambda t, o: (t / "jobs #1").is_dir() and not (t / "jobs").exists()),
    # --- malformed values in --set
    "--set eval_metrics=[w2, (unclosed)": Case(train_set("eval_metrics=[w2,"), 2, ("eval_metrics", "not valid YAML"),
                                               after=nothing_written),
    "--set betas=[0.9, 0.99 (unclosed)": Case(train_set("betas=[0.9, 0.99"), 2, ("betas", "not valid YAML"),
                                              after=nothing_written),
    "--set eval_metrics='[w2' (quoted, unclosed)": Case(train_set("eval_metrics='[w2'"), 2,
                                                        ("eval_metrics", "brackets do not match"), after=nothing_written),
    # --- a scheduler's signal: train saves the step, the others end with one line and nothing half-written
    "SIGTERM while training saves the step": Case(stop_in_step(7), 143, ("SIGTERM", "step 7", "ckpt-00000007.pt",
                                                                         "run the same command again"),
                                                  after=stopped_at(7)),
    "SIGUSR1 while training saves the step": Case(stop_in_step(13, __import__("signal").SIGUSR1), 138,
                                                  ("SIGUSR1", "step 13", "ckpt-00000013.pt"), after=stopped_at(13)),
    "SIGTERM between --seeds runs": Case(seeds_stop_between_runs, 143, ("SIGTERM", "1 of 2 runs finished"),
                                         after=seeds_after),
    "SIGTERM while evaluating": Case(signal_in("gclib.evaluation.evaluate_samples", lambda t, k: [
        "evaluate", k["ckpt"], "--metric", "w2", "--n", "50", "--out", str(t / "prev.out")]), 143,
        ("SIGTERM", "nothing was written"), after=prev_out_kept),
    "SIGTERM while sampling": Case(signal_in("gclib.evaluation.generate", lambda t, k: [
        "sample", k["ckpt"], "--n", "16", "--out", str(t / "s.npz")]), 143, ("SIGTERM", "nothing was written"),
        after=lambda t, o: not (t / "s.npz").exists() and not list(t.glob(".s.npz.*"))),
    "SIGTERM while reproduce runs a notebook": Case(reproduce_stopped, 143, ("SIGTERM", "left as they were"),
                                                    same=project_results("toy_flows", "cpu"),
                                                    after=no_staged_left("toy_flows")),
    # --- checked before work
    "frozen predictor of another data set (shape)": Case(other_dataset_predictor, 2,
                                                         ("predictor", "'two_gaussians'", "'digits'"),
                                                         after=nothing_written),
    "frozen predictor of another data set (same shape)": Case(same_shape_other_data_predictor, 2,
                                                              ("predictor", "'two_gaussians'", "'8gaussians'"),
                                                              after=nothing_written),
    "init_checkpoint of another network": Case(other_network_init, 2,
                                               ("init_checkpoint", "hidden=16 there, 32 here"), after=nothing_written),
    "GCLIB_RUNS is a file (reproduce --status)": Case(runs_env(a_file, ["reproduce", "--status"]), 2,
                                                      ("GCLIB_RUNS", "cache.txt", "is a file"),
                                                      after=lambda t, o: "finished" not in o),
    "GCLIB_RUNS below a file": Case(runs_env(lambda t: a_file(t) / "runs", ["reproduce", "--status"]), 2,
                                    ("GCLIB_RUNS", "below the file"), after=lambda t, o: "finished" not in o),
    "GCLIB_RUNS not writable (reproduce)": Case(runs_env(lambda t: "/sys/gclib-runs-test",
                                                         ["reproduce", "--only", "toy_flows", "--variant", "cpu"]), 2,
                                                ("GCLIB_RUNS=/sys/gclib-runs-test", "cannot be written"),
                                                after=lambda t, o: "==" not in o, same=project_results("toy_flows", "cpu")),
    "broken scikit-learn (installed, fails to import)": Case(broken_sklearn, 2, (
        "scikit-learn", "fails to import", "libgomp", "gclib[data]"), after=nothing_written),
    "broken matplotlib for sample --out f.png": Case(broken_matplotlib, 2, ("matplotlib", "fails to import",
                                                                            "gclib[notebooks]"),
                                                     after=lambda t, o: not (t / "f.png").exists()),
    "full disk appending metrics.csv": Case(full_disk_for("gclib.train", "metrics.csv"), 2,
                                            ("metrics.csv", "disk is full")),
    "full disk appending log.jsonl": Case(full_disk_for("gclib.runlog", "log.jsonl"), 2, ("log.jsonl", "disk is full")),
    # --- the number of processes is part of an OT run's identity
    "OT run of 1 process is not 'finished' for 2": Case(ot_run_on_other_world, 2, (
        "1 process", "2 processes", "'ot'", "another experiment"), same=lambda t: t / "run"),
})


def problem_lines(err: str) -> list:
    """stderr without the progress lines of sample and evaluate ('[gclib <command>] ...', gclib.progress): what
    is left is the one line that names the problem."""
    return [line for line in err.splitlines() if not line.startswith("[gclib ")]


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
    same = case.same(tmp_path) if case.same else None
    same_before = snapshot(same) if same else None
    code = main(argv)
    out, err = capsys.readouterr()
    err = err.strip()
    assert code == case.code, (name, code, err[-3000:])
    if case.code:
        assert len(problem_lines(err)) == 1 and err.splitlines()[-1] == problem_lines(err)[0], (name, err)
        assert problem_lines(err)[0].startswith(f"gclib {argv[0]}: "), err
    for w in case.words:
        assert w in err, (name, w, err)
    for w in case.absent + ("Traceback",):
        assert w not in err, (name, w, err)
    if kept:
        after = snapshot(kept)
        assert after == before, (name, sorted(set(after) ^ set(before)))
        assert not (kept / ".gclib-run").exists() and not (kept / "lock").exists()
    if same:
        assert snapshot(same) == same_before, (name, "changed", same)
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


# ------------------------------------------------------------------------------------ issue 31: library faults
NOTEBOOK_WRITER = """
import os, signal, sys
from gclib import report
out = report.results_dir("nb", "cpu")
(out / "table.csv").write_text("new table")
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[1] == "raise":
    raise RuntimeError("dies after its first table")
report.write_metrics(out, {"new": 1})
"""


def fake_project(tmp) -> Path:
    """A project root of its own (pyproject.toml of gclib) with committed results/nb/cpu/."""
    root = tmp / "proj"
    (root / "results" / "nb" / "cpu").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "gclib"\n')
    for name, text in (("table.csv", "old table"), ("metrics.json", '{"old": 1}'), ("fig.png", "old figure")):
        (root / "results" / "nb" / "cpu" / name).write_text(text)
    return root


def run_writer(root: Path, how: str):
    import subprocess
    import sys
    (root / "w.py").write_text(NOTEBOOK_WRITER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    env.pop("GCLIB_RESULTS_STAGE", None)
    return subprocess.run([sys.executable, "w.py", how], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def notebook_killed_leaves_old_results(tmp, fx):
    root = fake_project(tmp)
    final = root / "results" / "nb" / "cpu"
    before = snapshot(final)
    assert run_writer(root, "kill").returncode == -9
    assert snapshot(final) == before                              # the old folder, byte for byte
    left = [p.name for p in final.parent.iterdir() if p.name != "cpu"]
    assert len(left) == 1 and left[0].startswith(".cpu.partial-")  # the killed run's leftover, hidden
    assert run_writer(root, "ok").returncode == 0                 # the next run cleans it up and commits
    assert sorted(p.name for p in final.parent.iterdir()) == ["cpu"]
    assert snapshot(final) == {"table.csv": b"new table", "metrics.json": b'{\n  "new": 1\n}\n'}


def notebook_raising_leaves_old_results(tmp, fx):
    root = fake_project(tmp)
    final = root / "results" / "nb" / "cpu"
    before = snapshot(final)
    r = run_writer(root, "raise")
    assert r.returncode == 1 and "dies after its first table" in r.stderr
    assert snapshot(final) == before and sorted(p.name for p in final.parent.iterdir()) == ["cpu"]


FAILING_NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "id": "params", "metadata": {"tags": ["parameters"]}, "execution_count": None,
         "outputs": [], "source": 'variant = "default"\n'},
        {"cell_type": "code", "id": "table", "metadata": {}, "execution_count": None, "outputs": [],
         "source": 'from gclib import report\nout = report.results_dir("nb", variant)\n'
                   '(out / "table.csv").write_text("new table")\n'},
        {"cell_type": "code", "id": "dies", "metadata": {}, "execution_count": None, "outputs": [],
         "source": 'raise RuntimeError("dies after its first table")\n'},
        {"cell_type": "code", "id": "metrics", "metadata": {}, "execution_count": None, "outputs": [],
         "source": 'report.write_metrics(out, {"new": 1})\n'}],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5}


def reproduce_failing_notebook_leaves_old_results(tmp, fx):
    """`gclib reproduce` runs a notebook that dies after its first table: results/nb/cpu/ stays byte for byte, the
    line names the executed notebook (kept, hidden); fixed, the next run replaces the folder and cleans up."""
    root = fake_project(tmp)
    (root / "results" / "nb" / "cpu" / "nb.ipynb").write_text("the executed notebook of the last good run")
    (root / "notebooks").mkdir()
    (root / "params" / "nb").mkdir(parents=True)
    (root / "params" / "nb" / "cpu.yaml").write_text("variant: cpu\n")
    nb = root / "notebooks" / "nb.ipynb"
    nb.write_text(json.dumps(FAILING_NOTEBOOK))
    final = root / "results" / "nb" / "cpu"
    before = snapshot(final)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("GCLIB_RUNS", str(tmp / "runs"))
        mp.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
        import contextlib
        import io
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["reproduce", "--only", "nb"])
        line = err.getvalue().strip()
        assert code == 1 and len(line.splitlines()) == 1 and "dies after its first table" in line, line
        assert snapshot(final) == before
        kept = [p for p in final.parent.iterdir() if p.name.startswith(".cpu.partial-")]
        assert len(kept) == 1 and f"{kept[0].name}/nb.ipynb" in line
        assert "dies after its first table" in (kept[0] / "nb.ipynb").read_text()
        fixed = dict(FAILING_NOTEBOOK, cells=[c for i, c in enumerate(FAILING_NOTEBOOK["cells"]) if i != 2])
        nb.write_text(json.dumps(fixed))
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["reproduce", "--only", "nb"]) == 0
    assert sorted(p.name for p in final.parent.iterdir()) == ["cpu"]
    assert sorted(snapshot(final)) == ["metrics.json", "nb.ipynb", "table.csv"]
    assert (final / "table.csv").read_text() == "new table"


def commit_cut_between_renames_is_undone(tmp, fx):
    """Killed between the two renames of a commit: no results/nb/cpu, the old folder aside; the next run puts it
    back before it stages."""
    from gclib.staging import Stage
    root = fake_project(tmp)
    final = root / "results" / "nb" / "cpu"
    before = snapshot(final)
    os.rename(final, final.parent / ".cpu.replaced-123-abcdef")
    (final.parent / ".cpu.partial-123-abcdef").mkdir()            # the staged folder, its lock file gone
    stage = Stage.begin(final)
    assert snapshot(final) == before
    assert sorted(p.name for p in final.parent.iterdir()) == sorted(["cpu", stage.path.name])
    stage.abandon()


def a_live_stage_is_not_cleaned_up(tmp, fx):
    """Two runs of one variant at once: the second never removes the first's staged folder; the last commit wins."""
    from gclib.staging import Stage
    root = fake_project(tmp)
    final = root / "results" / "nb" / "cpu"
    first = Stage.begin(final)
    (first.path / "a.csv").write_text("first")
    second = Stage.begin(final)
    assert first.path.is_dir() and (first.path / "a.csv").read_text() == "first"
    (second.path / "a.csv").write_text("second")
    first.commit()
    second.commit()
    assert snapshot(final) == {"a.csv": b"second"}
    assert sorted(p.name for p in final.parent.iterdir()) == ["cpu"]


def papermill_nan_is_named_nan(tmp, fx):
    """`papermill -y "t_pred: .nan"` injects t_pred = float('nan'): the check names nan, not None."""
    from gclib.experiments import toy_flows as tf
    from gclib.experiments.params import check_params, notebook_parameters
    ns = {**notebook_parameters("toy_flows"), "In": ["# Parameters\nt_pred = float('nan')\n"], "t_pred": float("nan")}
    with pytest.raises(ValueError, match=r"t_pred=nan is not valid") as e:
        tf.setup(check_params("toy_flows", ns))
    assert "None" not in str(e.value)
    ns = {**notebook_parameters("toy_flows"), "In": ["# Parameters\neq16_ts = [0.2, float('inf')]\n"],
          "eq16_ts": [0.2, float("inf")]}
    with pytest.raises(ValueError, match=r"eq16_ts=\[0.2, inf\]"):
        tf.setup(check_params("toy_flows", ns))


def world_size_in_the_identity_of_ot_only(tmp, fx):
    """The number of processes enters the hash only where it changes the experiment (OT pairs per rank) and
    only above one process: every one-process hash is what it was."""
    import hashlib
    from gclib.config import _in_hash, config_hash, from_dict, run_dir_for
    for flow in ("ic", "ot", "gc"):
        cfg = from_dict(cfg_dict(tmp, flow=flow, run_dir=None))
        d = {k: v for k, v in cfg.to_dict().items() if _in_hash(cfg, k, v)}
        old = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]
        assert config_hash(cfg) == config_hash(cfg, world_size=1) == old
        two = config_hash(cfg, world_size=2)
        assert (two != old) == (flow == "ot") and (config_hash(cfg, world_size=4) != two) == (flow == "ot")
        assert run_dir_for(cfg, world_size=2).name == f"t-{two}"


def gclib_cache_expands_tilde(tmp, fx):
    from gclib.metrics.inception import default_cache_dir
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp))
        mp.setenv("GCLIB_CACHE", "~/gc")
        assert default_cache_dir() == tmp / "gc"
        (tmp / "file").write_text("x")
        mp.setenv("GCLIB_CACHE", str(tmp / "file"))
        with pytest.raises(OSError, match="GCLIB_CACHE=.* is a file"):
            default_cache_dir()


def full_disk_out(command: str):
    """`gclib evaluate/sample ... --out prev` on a full disk (a file size limit): the previous file stays whole,
    one line names it and the cause."""
    def case(tmp, fx):
        import resource
        import signal as sg
        import subprocess
        import sys
        suffix = ".json" if command == "evaluate" else ".npz"
        prev = tmp / f"prev{suffix}"
        prev.write_bytes(b"the previous results")

        def limit():
            sg.signal(sg.SIGXFSZ, sg.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
        extra = ["--metric", "w2"] if command == "evaluate" else []
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, "-m", "gclib", command, fx["ckpt"], "--n", "64", *extra, "--out", str(prev)],
                           capture_output=True, text=True, timeout=300, preexec_fn=limit, env=env)
        err = r.stderr.strip()
        assert r.returncode == 2 and len(problem_lines(err)) == 1 and err.splitlines()[-1] == problem_lines(err)[0], \
            err[-2000:]
        assert str(prev) in err and "File too large" in err and "unchanged" in err
        assert prev.read_bytes() == b"the previous results" and not list(tmp.glob(".prev*"))
    return case


API_CASES.update({
    "a notebook killed mid-run leaves its old results": notebook_killed_leaves_old_results,
    "a notebook that raises leaves its old results": notebook_raising_leaves_old_results,
    "reproduce: a failing notebook leaves its old results": reproduce_failing_notebook_leaves_old_results,
    "a commit cut between its renames is undone": commit_cut_between_renames_is_undone,
    "a live staged folder is never cleaned up": a_live_stage_is_not_cleaned_up,
    "papermill's nan is named nan, not None": papermill_nan_is_named_nan,
    "world size in the identity of OT runs only": world_size_in_the_identity_of_ot_only,
    "GCLIB_CACHE: ~ expanded, a file refused": gclib_cache_expands_tilde,
    "evaluate --out on a full disk keeps the old file": full_disk_out("evaluate"),
    "sample --out on a full disk keeps the old file": full_disk_out("sample"),
})


@pytest.mark.parametrize("name", list(API_CASES))
def test_library_fault(name, tmp_path, trained, monkeypatch):
    monkeypatch.chdir(tmp_path)
    API_CASES[name](tmp_path, trained)


def test_the_table_is_large_enough():
    assert len(CLI_CASES) + len(API_CASES) >= 40 + 30   # issue 20's table and issue 31's rows
