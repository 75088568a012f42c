"""A run's identity depends only on the settings its parts use, and every existing run keeps its run directory
(issue 32, item 2).

- IC's hash does not see mu (``--set mu=0.9`` gave the toy IC run a new hash, b96ac60424 -> 072ef5669d, so IC
  retrained the same weights); ot_solver likewise for the flows that do not solve OT (``config.ignored_settings``).
- Every committed profile's runs resolve to the run directories they resolved to at commit 16114e5 (the same as
  9a5d7b1 for every profile of both; gpu_replication.yaml was renamed cpu_long_replication.yaml, same runs): the
  list in run_identity_16114e5.json, written by this module's ``profile_runs`` run on that commit's checkout
  (``PYTHONPATH=<checkout> python tests/test_run_identity.py <checkout> > tests/run_identity_16114e5.json``).
- Every configuration that leaves the ignored settings at their defaults hashes as the hash function of that
  commit, frozen here (``frozen_hash``), so runs cached by it (a background sweep) stay reachable.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = Path(__file__).with_name("run_identity_16114e5.json")
RUNS = "/gclib-runs"          # $GCLIB_RUNS while computing: frozen predictors are paths inside the run cache
NOTEBOOKS = ("ct_cd_gap", "transport_cost", "toy_flows")


def profile_files(root: Path) -> list[Path]:
    """The committed profiles whose runs are pinned: params/fid_curves/*.yaml, params/<notebook>/*.yaml and the
    training presets params/train/*.yaml (each with every flow overlay)."""
    files = sorted((root / "params" / "fid_curves").glob("*.yaml"))
    for nb in NOTEBOOKS:
        files += sorted((root / "params" / nb).glob("*.yaml"))
    return files + sorted((root / "params" / "train").glob("*.yaml"))


def runs_of(path: Path, root: Path) -> list:
    """[[run name, config hash (16 hex)], ...] of the runs a profile trains, as its notebook (or gclib train) builds
    them; for a preset, its own flow and each overlay's flow (a composition the config refuses is left out)."""
    from gclib.config import as_config, config_hash, load_config
    kind = path.parent.name
    if kind == "fid_curves":
        from gclib.experiments import fid_curves
        sw = fid_curves.sweep_from_params(path, root=root)
        cfgs = [as_config(fid_curves.run_config(sw.base, r)) for r in sw.runs()]
    elif kind in NOTEBOOKS:
        import importlib

        import yaml

        from gclib.experiments.params import notebook_parameters
        driver = importlib.import_module(f"gclib.experiments.{kind}")
        p = {**notebook_parameters(kind, root), **yaml.safe_load(path.read_text()), "device": "cpu"}
        if "device" not in notebook_parameters(kind, root):
            p.pop("device")
        cwd = os.getcwd()
        os.chdir(root)
        try:   # setup's results folder is not created here
            with mock.patch("gclib.report.results_dir", lambda *a, **k: Path(root) / "results"):
                cfgs = [driver.setup(SimpleNamespace(**p))[0]]
        finally:
            os.chdir(cwd)
    else:
        from gclib.config import ConfigError
        cfgs = []
        for flow in [None] + sorted(f.stem for f in (path.parent / "flows").glob("*.yaml")):
            try:
                cfgs.append(load_config(path, flow=flow))
            except ConfigError:   # e.g. cifar10_denoise with a flow other than ic
                pass
    return [[c.name, config_hash(c, 16)] for c in cfgs]


def profile_runs(root: Path) -> dict:
    """{profile (relative path): {"sha256": of the file, "runs": runs_of(...)}} for every profile of ``root``."""
    os.environ["GCLIB_RUNS"] = RUNS
    return {str(f.relative_to(root)): {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "runs": runs_of(f, root)}
            for f in profile_files(root)}


EXPECTED_RUNS = json.loads(EXPECTED.read_text()) if EXPECTED.is_file() else {}


@pytest.mark.parametrize("profile", sorted(EXPECTED_RUNS))
def test_committed_profiles_resolve_to_their_run_directories(profile, monkeypatch):
    monkeypatch.setenv("GCLIB_RUNS", RUNS)
    path, want = ROOT / profile, EXPECTED_RUNS[profile]
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != want["sha256"]:
        pytest.skip(f"{profile} was removed or edited since 16114e5; test_every_profile_hashes_as_before covers it")
    assert runs_of(path, ROOT) == want["runs"]


def test_the_pinned_list_covers_the_profiles():
    assert len(EXPECTED_RUNS) >= 25 and sum(len(v["runs"]) for v in EXPECTED_RUNS.values()) >= 390
    assert "params/fid_curves/cpu_long_replication.yaml" in EXPECTED_RUNS


# ----------------------------------------------------------------------------------------- the frozen hash function
# gclib.config.config_hash as of 9a5d7b1 / 16114e5: sha256 of the JSON of the fields that count, each field's
# place in the hash as the metadata said then (fields added since are left out: a field that counts for a
# configuration gives its runs new directories, which this test reports).
FROZEN_FIELDS = (
    "seed", "dataset", "num_data", "model", "hidden", "depth", "emb_dim", "channels", "channel_mult", "num_blocks",
    "attn_resolutions", "dropout", "sigma_min", "sigma_max", "sigma_data", "rho", "s0", "s1", "p_mean", "p_std",
    "distance", "flow", "mu", "predictor", "ot_solver", "predict_all", "objective", "schedule", "ect_q",
    "ect_stages", "ect_k", "ect_b", "ect_stage_offset", "ect_r_clip", "ect_distance", "init_checkpoint",
    "optimizer", "lr", "betas", "weight_decay", "eps", "batch_size", "total_steps", "ema_decay", "ema_every",
    "eval_every", "eval_metrics", "eval_n", "bf16", "channels_last")
FROZEN_NEUTRAL = {"objective": "consistency", "schedule": "ict", "init_checkpoint": None, "ect_q": 2.0,
                  "ect_stages": 8, "ect_k": 8.0, "ect_b": 1.0, "ect_stage_offset": 0, "ect_r_clip": "sigma_min",
                  "ect_distance": None}
FROZEN_ECT_ONLY = ("ect_stage_offset", "ect_r_clip", "ect_distance")


def frozen_hash(cfg, length: int = 16) -> str:
    d = {k: v for k, v in cfg.to_dict().items()
         if k in FROZEN_FIELDS and not (k in FROZEN_NEUTRAL and v == FROZEN_NEUTRAL[k])
         and not (k in FROZEN_ECT_ONLY and cfg.schedule != "ect")}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:length]


def test_the_frozen_function_is_the_old_hash():
    """It reproduces hashes recorded before this change (the issue's two toy IC hashes, test_config's pins)."""
    from gclib.config import load_config
    toy = ROOT / "params" / "train" / "toy.yaml"
    assert frozen_hash(load_config(toy), 10) == "b96ac60424"
    assert frozen_hash(load_config(toy, ["mu=0.9"]), 10) == "072ef5669d"


def _all_profile_configs():
    from gclib.config import as_config, load_config
    from gclib.experiments import fid_curves
    for f in sorted((ROOT / "params" / "fid_curves").glob("*.yaml")):
        sw = fid_curves.sweep_from_params(f, root=ROOT)
        yield from (as_config(fid_curves.run_config(sw.base, r)) for r in sw.runs())
    for f in sorted((ROOT / "params" / "train").glob("*.yaml")):
        yield load_config(f)


def test_every_profile_hashes_as_before(monkeypatch):
    """Every run of every profile now in the tree (edited or added ones too) hashes as the frozen function of the
    same configuration with its ignored settings at their defaults; the committed ones set none."""
    from gclib.config import config_hash, ignored_settings
    monkeypatch.setenv("GCLIB_RUNS", RUNS)
    n = new = 0
    for cfg in _all_profile_configs():
        if cfg.train_boundary != "shifted":   # ECT's training-mode boundary (issue 33): a new experiment by design,
            old = cfg.replace(train_boundary="shifted")   # its former runs are the same config with gclib's form
            assert config_hash(old, 16) == frozen_hash(old.replace(**ignored_settings(old))), cfg.name
            assert config_hash(cfg, 16) != config_hash(old, 16), cfg.name
            new += 1
            continue
        assert config_hash(cfg, 16) == frozen_hash(cfg.replace(**ignored_settings(cfg))), cfg.name
        n += 1
    assert n >= 300 and new >= 1


# ----------------------------------------------------------------------------------------- settings a run ignores
def test_ic_hash_does_not_see_mu_and_ot_solver():
    from gclib.config import config_hash, ignored_settings, load_config
    toy = ROOT / "params" / "train" / "toy.yaml"
    ic = load_config(toy)
    assert config_hash(ic) == "b96ac60424"
    for change in (["mu=0.9"], ["ot_solver=emd"], ["predict_all=true"], ["predictor=online"],
                   ["mu=0.1", "ot_solver=scipy", "predictor=/nowhere/ckpt.pt"]):
        assert config_hash(load_config(toy, change)) == "b96ac60424", change
    assert ignored_settings(ic) == {"mu": 0.5, "predictor": "ema", "ot_solver": "auto", "predict_all": False}
    ot, gc = load_config(toy, flow="ot"), load_config(toy, flow="gc")
    assert ignored_settings(ot) == {"mu": 0.5, "predictor": "ema", "predict_all": False}
    assert ignored_settings(gc) == {"ot_solver": "auto"}
    assert config_hash(ot.replace(mu=0.9, predictor="online")) == config_hash(ot) == "b787350a2a"
    assert config_hash(gc.replace(ot_solver="scipy")) == config_hash(gc) == "9085ecd2cd"
    # the settings a flow reads still make a new run
    assert config_hash(ot.replace(ot_solver="scipy")) != config_hash(ot)
    assert config_hash(gc.replace(mu=0.9)) != config_hash(gc) != config_hash(gc.replace(predictor="online"))
    assert config_hash(gc.replace(predict_all=True)) != config_hash(gc)
    assert config_hash(ic.replace(lr=1e-3)) != config_hash(ic)


def test_a_registered_coupling_is_identified_by_what_it_reads():
    import torch

    from gclib.config import config_hash, load_config
    from gclib.couplings import Coupling, Pairs, register_coupling, unregister_coupling

    class Mixed(Coupling):     # reads mu; needs no predictor
        def __init__(self, mu: float = 0.5):
            self.mu = mu

        def pair(self, x, z, **_):
            return Pairs(x, z, torch.zeros(x.shape[0], dtype=torch.bool))
    register_coupling("mixed_identity", Mixed)
    try:
        c = load_config(None, {"flow": "mixed_identity"})
        assert config_hash(c.replace(mu=0.9)) != config_hash(c)
        assert config_hash(c.replace(ot_solver="scipy", predictor="online")) == config_hash(c)
    finally:
        unregister_coupling("mixed_identity")


@pytest.mark.parametrize("flow,ignored", [
    ("ic", {"mu": 0.9, "ot_solver": "scipy", "predict_all": True, "predictor": "online"}),
    ("ot", {"mu": 0.1, "predict_all": True, "predictor": "/nowhere/frozen.pt"}),
    ("gc", {"ot_solver": "scipy"}),
])
def test_ignored_settings_train_the_same_weights(flow, ignored, tmp_path):
    """What the identity rule rests on: a setting the run's coupling does not read changes no trained bit."""
    import torch

    from gclib.train import train
    base = dict(flow=flow, hidden=16, depth=1, emb_dim=8, batch_size=32, total_steps=5, s0=2, s1=4, sigma_max=5.0,
                checkpoint_every=0, eval_metrics=[], progress=False, device="cpu", log_every=0, ema_every=1,
                mu=0.5 if flow != "gc" else 0.7)
    a = train({**base, "run_dir": str(tmp_path / "a")})
    b = train({**base, **ignored, "run_dir": str(tmp_path / "b")})
    assert a.extra["param_checksums"] == b.extra["param_checksums"]
    wa, wb = a.load()[0].state_dict(), b.load()[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def dumps(runs: dict) -> str:
    """The pinned list as JSON, one run per line."""
    parts = []
    for profile, v in runs.items():
        lines = ",\n".join(f"   {json.dumps(r)}" for r in v["runs"])
        parts.append(f' {json.dumps(profile)}: {{"sha256": {json.dumps(v["sha256"])}, "runs": [\n{lines}]}}')
    return "{\n" + ",\n".join(parts) + "\n}\n"


if __name__ == "__main__":   # the pinned list: run on the checkout whose runs are pinned
    sys.stdout.write(dumps(profile_runs(Path(sys.argv[1]).resolve())))
