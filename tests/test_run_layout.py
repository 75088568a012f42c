"""The run directory's layout is named in one place, gclib.rundir.RunPaths, and what training writes is there."""
from pathlib import Path

from gclib import reproduce, rundir, train
from gclib.checkpoint import ckpt_path
from gclib.rundir import RunPaths


def test_one_layout_for_training_sweeps_and_reproduce(tmp_path):
    assert train.RunPaths is RunPaths
    p = RunPaths(tmp_path / "run")
    assert p.checkpoint(40) == ckpt_path(p.ckpt_dir, 40) == tmp_path / "run" / "checkpoints" / "ckpt-00000040.pt"
    assert {x.name for x in (p.lock, p.marker, p.config_yaml, p.metrics_csv, p.eval_csv, p.done_json)} == \
        set(rundir.RUN_FILES)
    assert {p.ckpt_dir.name, p.samples.name} == set(rundir.RUN_FOLDERS)
    assert reproduce.run_state(p.run_dir) == ("pending", 0) and p.checkpoint_steps() == []


def test_a_trained_run_has_the_files_runpaths_names(tmp_path):
    cfg = dict(name="lay", dataset="8gaussians", num_data=64, model="mlp", hidden=8, depth=1, emb_dim=4,
               sigma_max=5.0, s0=2, s1=4, batch_size=16, total_steps=4, checkpoint_every=2, keep_checkpoints=2,
               progress=False, run_dir=str(tmp_path / "run"))
    train.train(cfg)
    p = RunPaths(Path(cfg["run_dir"]))
    assert p.config_yaml.is_file() and p.metrics_csv.is_file() and p.done_json.is_file() and p.marker.is_file()
    assert p.checkpoint_steps() == [4, 2] and p.checkpoint(4).is_file()
    assert reproduce.run_state(p.run_dir) == ("finished", -1)
    p.done_json.unlink()
    assert reproduce.run_state(p.run_dir) == ("partial", 4)
