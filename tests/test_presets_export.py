"""Presets by name (package data, gclib/presets), `gclib presets` and `gclib config`; `gclib export` to safetensors
with the config as JSON beside it, read back by load_model; the README's load -> sample -> evaluate snippet."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config
from gclib.checkpoint import CheckpointError
from gclib.cli import main
from gclib.config import PRESETS_DIR, ConfigError, config_hash, load_config, preset_names, run_dir_for
from gclib.models import config_beside, export_model, load_model

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params" / "train"


# ------------------------------------------------------------------------------------------- presets
def test_the_packaged_presets_are_params_train():
    """One copy of the files: in a checkout gclib/presets is params/train (a link), so the wheel ships exactly them."""
    assert PRESETS_DIR.resolve() == PARAMS.resolve()
    assert preset_names() == sorted(p.stem for p in PARAMS.glob("*.yaml"))
    assert sorted(p.name for p in (PRESETS_DIR / "flows").glob("*.yaml")) == ["gc.yaml", "ic.yaml", "ot.yaml"]


@pytest.mark.parametrize("preset", ["toy", "digits", "cifar10", "cifar10_ect"])
def test_a_preset_by_name_is_the_file_and_the_hash_is_of_the_content(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                      # no params/ here: the name is read from gclib's presets
    by_file = load_config(PARAMS / f"{preset}.yaml", ["seed=3"], flow="gc")
    assert load_config(preset, ["seed=3"], flow="gc") == by_file == load_config(f"{preset}.yaml", ["seed=3"], flow="gc")
    # the same text elsewhere, without a flows/ folder beside it, takes gclib's overlays: the same run, same hash
    shutil.copy(PARAMS / f"{preset}.yaml", tmp_path / "mine.yaml")
    mine = load_config("mine.yaml", ["seed=3"], flow="gc")
    assert mine == by_file and config_hash(mine) == config_hash(by_file)


def test_a_wrong_name_lists_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config("cifar11", flow="gc")
    assert str(e.value).startswith("config file 'cifar11' does not exist and is not a preset of gclib; presets: ")
    assert "cifar10, cifar10_denoise" in str(e.value)
    with pytest.raises(ConfigError, match=r"'x/cifar10.yaml' does not exist \(a preset is named without a folder"):
        load_config("x/cifar10.yaml")
    (tmp_path / "toy.yaml").write_text("name: here\n")     # a file of that name wins over the preset
    assert load_config("toy.yaml").name == "here" and load_config("toy").name == "toy_ic"


def test_presets_and_config_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^  {n}\s", out, re.M) for n in preset_names()) and "flow overlays (--flow): gc, ic, ot" in out
    assert main(["config", "digits", "--flow", "gc", "--set", "lr=3e-4", "--set", "optim.batch_size=64"]) == 0
    printed = capsys.readouterr().out
    want = load_config("digits", ["lr=3e-4", "batch_size=64"], flow="gc")
    assert f"# run directory: {run_dir_for(want)}\n" in printed and f"# config hash: {config_hash(want)}\n" in printed
    (tmp_path / "printed.yaml").write_text(printed)          # what it prints is a config file: the same run
    assert load_config("printed.yaml") == want
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert all(n in helptext for n in preset_names()), helptext   # --help names them
    assert main(["config", "digits", "--set", "lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown configuration key 'lrr'" in err


# ------------------------------------------------------------------------------------------- export and load
@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from gclib.train import train
    tmp = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    return train(tiny_config(tmp, total_steps=20, flow="gc", mu=0.5))


def test_export_writes_the_ema_weights_and_the_config_and_load_model_reads_both_forms(toy_run, tmp_path, capsys):
    out = tmp_path / "share" / "model.safetensors"
    assert main(["export", str(toy_run.run_dir), "--out", str(out)]) == 0
    assert f"wrote the EMA weights to {out} and the config to {out.with_suffix('.json')}" in capsys.readouterr().out
    from safetensors.torch import load_file
    ckpt = torch.load(toy_run.checkpoint, weights_only=True)
    exported = load_file(out)
    assert exported.keys() == ckpt["ema"].keys() and all(torch.equal(exported[k], ckpt["ema"][k]) for k in exported)
    cfg_json = json.loads(config_beside(out).read_text())
    assert cfg_json == toy_run.config.to_dict()
    assert config_hash(load_config(config_beside(out))) == config_hash(toy_run.config)   # gclib train model.json: same run
    model_c, ema_c, cfg_c = load_model(toy_run.checkpoint)
    model_e, ema_e, cfg_e = load_model(out)
    assert cfg_e == cfg_c and ema_e.data_shape == ema_c.data_shape == (2,)
    assert not ema_e.training and not model_e.training
    z = torch.randn(64, 2)
    assert torch.equal(ema_e(5.0 * z, 5.0), ema_c(5.0 * z, 5.0))                 # the same sampler, bit for bit
    assert torch.equal(model_e(5.0 * z, 5.0), ema_c(5.0 * z, 5.0))               # an export holds the EMA weights
    # a checkpoint file exports the same; sample and evaluate take the export as they take a checkpoint
    again = tmp_path / "again.safetensors"
    export_model(toy_run.checkpoint, again)
    from safetensors import safe_open
    with safe_open(str(out), "pt") as a, safe_open(str(again), "pt") as b:
        assert a.metadata() == b.metadata() and a.metadata()["step"] == "20"
    assert all(torch.equal(v, load_file(again)[k]) for k, v in exported.items())
    assert main(["sample", str(out), "--n", "16", "--out", str(tmp_path / "s.npz")]) == 0
    assert main(["evaluate", str(out), "--metric", "w2", "--n", "32"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["w2"] > 0


def test_bad_exports_are_named_in_one_line(toy_run, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    export_model(toy_run.run_dir, out)
    cases = [(["export", str(toy_run.run_dir), "--out", str(tmp_path / "m.pt")], "must end with .safetensors"),
             (["export", str(tmp_path), "--out", str(tmp_path / "x.safetensors")], "is a folder without checkpoints"),
             (["export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.safetensors")], "does not exist")]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, (argv, err)
    cfg = json.loads(config_beside(out).read_text())
    config_beside(out).write_text(json.dumps({**cfg, "lr": 0.5}))              # the config of another run
    with pytest.raises(CheckpointError, match="is not the config of"):
        load_model(out)
    config_beside(out).unlink()
    with pytest.raises(CheckpointError, match=r"m.json must lie beside it"):
        load_model(out)
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        load_model(tmp_path / "bad.safetensors")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="is not a gclib export"):
        load_model(tmp_path / "foreign.safetensors")


def readme_snippet() -> str:
    """The README's load -> sample -> evaluate block (the python block that loads model.safetensors)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = [b for b in blocks if 'load_model("model.safetensors")' in b]
    assert len(found) == 1, "README.md must hold one python block loading model.safetensors"
    return found[0]


def test_the_readme_snippet_loads_samples_and_evaluates_an_export(toy_run, tmp_path, monkeypatch):
    code = readme_snippet()
    assert len(code.strip().splitlines()) == 5
    monkeypatch.chdir(tmp_path)
    export_model(toy_run.run_dir, "model.safetensors")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "README.md", "exec"), {})                               # noqa: S102 - the README's code
    printed = yaml.safe_load(buf.getvalue().strip().replace("'", '"'))
    assert set(printed) == {"w2"} and 0 < printed["w2"] < 10
