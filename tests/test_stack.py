"""Runs trained as one stack (gclib.stack): each run ends where it ends trained alone (to float rounding: the
batched kernels sum in another order), its files and checkpoints are train's own (a stacked run resumes alone and
the other way round), and configurations that cannot share a stack are refused before anything is written."""
import json

import pytest
import torch

import gclib.stack as stack_mod
from gclib.config import ConfigError, load_config
from gclib.couplings import GC, Coupling, Pairs, register_coupling, unregister_coupling
from gclib.models import load_model
from gclib.stack import StackedModel, train_stack
from gclib.train import train
from conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

RUNS = [dict(flow="ic", seed=0), dict(flow="ot", seed=0), dict(flow="gc", mu=0.5, seed=0), dict(flow="gc", mu=1.0, seed=1)]


def _cfgs(root, runs=RUNS, **changes):
    return [tiny_config(root, name=f"s_{r['flow']}_{r.get('mu', 0)}_{r['seed']}", **{**r, **changes}) for r in runs]


def _weights(result):
    return torch.load(result.checkpoint, weights_only=False)


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _losses(result):
    return [float(line.split(",")[1]) for line in result.metrics_csv.read_text().splitlines()[1:]]


def test_a_stacked_run_ends_where_the_run_alone_ends(tmp_path):
    alone = [train(c) for c in _cfgs(tmp_path / "alone", eval_every=15, eval_metrics=["w2"], eval_n=128)]
    stacked = train_stack(_cfgs(tmp_path / "stack", eval_every=15, eval_metrics=["w2"], eval_n=128))
    assert [r.step for r in stacked] == [30] * 4 and not any(r.skipped for r in stacked)
    for a, s in zip(alone, stacked):
        assert a.run_dir.name == s.run_dir.name  # same configuration, same hash
        ca, cs = _weights(a), _weights(s)
        assert _max_diff(ca["model"], cs["model"]) < 1e-5 and _max_diff(ca["ema"], cs["ema"]) < 1e-5
        assert ca["data"] == cs["data"]
        assert ca["rng"][0]["streams"]["noise"].equal(cs["rng"][0]["streams"]["noise"])
        assert _losses(a) == pytest.approx(_losses(s), rel=1e-5)
        ea, es = a.eval_csv.read_text().splitlines(), s.eval_csv.read_text().splitlines()
        assert ea[0] == es[0] and len(ea) == len(es) == 3
        done = json.loads((s.run_dir / "done.json").read_text())
        assert done["stack_size"] == 4 and "stack_size" not in json.loads((a.run_dir / "done.json").read_text())
    # the tolerance tells runs apart: a stacked run is far from every other run trained alone
    for i, s in enumerate(stacked):
        for j, a in enumerate(alone):
            if i != j:
                assert _max_diff(_weights(a)["model"], _weights(s)["model"]) > 1e-2


def test_the_digits_unet_stacks_too(tmp_path):
    common = dict(dataset="digits", num_data=8192, model="unet_digits", hidden=256, depth=3, emb_dim=64,
                  batch_size=8, total_steps=6, checkpoint_every=6, s1=20, sigma_max=80.0, distance="pseudo_huber")
    runs = [dict(flow="ic", seed=0), dict(flow="gc", mu=0.5, seed=1)]
    alone = [train(c) for c in _cfgs(tmp_path / "a", runs, **common)]
    stacked = train_stack(_cfgs(tmp_path / "s", runs, **common))
    for a, s in zip(alone, stacked):
        assert _max_diff(_weights(a)["model"], _weights(s)["model"]) < 1e-5
    assert _max_diff(_weights(alone[0])["model"], _weights(stacked[1])["model"]) > 1e-2


def test_stacked_model_is_the_k_networks():
    nets = [torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.SiLU(), torch.nn.Linear(5, 3)) for _ in range(3)]

    class F(torch.nn.Module):  # a model's call signature: f(x, sigma)
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, sigma):
            return self.net(x) * sigma[:, None]

    models = [F(n) for n in nets]
    sm = StackedModel(models, requires_grad=False)
    x, s = torch.randn(12, 3), torch.rand(12) + 0.5
    ref = torch.cat([m(x[4 * k:4 * k + 4], s[4 * k:4 * k + 4]) for k, m in enumerate(models)])
    assert torch.allclose(sm(x, s), ref, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 3"):
        sm(x[:10], s[:10])
    target = F(torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.SiLU(), torch.nn.Linear(5, 3)))
    sm.copy_to(2, target)
    assert torch.allclose(target(x, s), models[2](x, s))


class _Stop(Exception):
    pass


def _stop_after(monkeypatch, last: int):
    original = stack_mod._record_step

    def record(st, step, *a):
        original(st, step, *a)
        if step == last:
            raise _Stop

    monkeypatch.setattr(stack_mod, "_record_step", record)


def test_a_stack_cut_short_resumes_alone_and_a_run_cut_short_resumes_in_a_stack(tmp_path, monkeypatch):
    reference = [train(c) for c in _cfgs(tmp_path / "ref", RUNS[:2])]
    # a stack killed at step 15 (checkpoint at 10): its runs resume alone
    cfgs = _cfgs(tmp_path / "x", RUNS[:2])
    _stop_after(monkeypatch, 15)
    with pytest.raises(_Stop):
        train_stack(cfgs)
    monkeypatch.undo()
    assert not (reference[0].run_dir.parent.parent / "x").joinpath(reference[0].run_dir.name, "done.json").exists()
    for ref, c in zip(reference, cfgs):
        res = train(c)
        assert _max_diff(_weights(ref)["model"], _weights(res)["model"]) < 1e-5
        assert len(_losses(res)) == 30
    # a run alone killed after its checkpoint at 20, stacked with a fresh one: each trains from its own step
    cfgs = _cfgs(tmp_path / "y", RUNS[:2])
    import gclib.train as train_mod
    original = train_mod._record_step

    def record(st, step, *a):
        original(st, step, *a)
        if step == 25:
            raise _Stop
    monkeypatch.setattr(train_mod, "_record_step", record)
    with pytest.raises(_Stop):
        train(cfgs[0])
    monkeypatch.undo()
    out = train_stack(cfgs)
    for ref, res in zip(reference, out):
        assert _max_diff(_weights(ref)["model"], _weights(res)["model"]) < 1e-5
        assert json.loads((res.run_dir / "done.json").read_text())["stack_size"] == 1  # two stacks of one
    # finished runs are not trained again
    again = train_stack(cfgs)
    assert all(r.skipped for r in again)


def test_frozen_predictors_stack(tmp_path):
    teacher = train(tiny_config(tmp_path / "t", name="teacher", total_steps=20))
    runs = [dict(flow="gc", mu=0.5, seed=s, predictor=str(teacher.checkpoint)) for s in (0, 1)]
    alone = [train(c) for c in _cfgs(tmp_path / "a", runs)]
    stacked = train_stack(_cfgs(tmp_path / "s", runs))
    for a, s in zip(alone, stacked):
        assert _max_diff(_weights(a)["model"], _weights(s)["model"]) < 1e-5
    _, ema, _ = load_model(stacked[0].checkpoint)  # a stacked run's checkpoint loads as any other
    assert ema(torch.zeros(4, 2), 1.0).shape == (4, 2)


@pytest.mark.parametrize("change,match", [
    (dict(lr=2e-3), "differ in lr"),
    (dict(hidden=32), "differ in hidden"),
    (dict(schedule="ect"), "ict schedule"),
    (dict(objective="denoising"), "consistency objective"),
    (dict(bf16=True), "bf16"),
])
def test_runs_that_cannot_share_a_stack_are_refused_before_anything_is_written(tmp_path, change, match):
    cfgs = _cfgs(tmp_path, [dict(flow="ic", seed=0), dict(flow="ic", seed=1)])
    if change.keys() <= {"lr", "hidden"}:
        cfgs[1].update(change)
    else:
        for c in cfgs:
            c.update(change)
    with pytest.raises(ConfigError, match=match):
        train_stack(cfgs)
    assert not (tmp_path / "runs").exists()


def test_a_stack_refuses_mixed_predictors_and_shared_directories(tmp_path):
    teacher = train(tiny_config(tmp_path / "t", name="teacher", total_steps=10))
    cfgs = _cfgs(tmp_path, [dict(flow="gc", seed=0), dict(flow="gc", seed=1, predictor=str(teacher.checkpoint))])
    with pytest.raises(ConfigError, match="one kind of predictor"):
        train_stack(cfgs)
    same = _cfgs(tmp_path, [dict(flow="ic", seed=0), dict(flow="ic", seed=0)])
    with pytest.raises(ConfigError, match="share a run directory"):
        train_stack(same)
    assert not (tmp_path / "runs").exists()


def test_cli_trains_seeds_as_one_stack_and_refuses_bad_combinations(tmp_path, capsys):
    from gclib.cli import main
    from nbhelpers import ROOT
    toy = str(ROOT / "params" / "train" / "toy.yaml")
    common = ["--set", "total_steps=12", "--set", f"runs_dir={tmp_path}", "--no-progress"]
    assert main(["train", toy, "--flow", "gc", "--seeds", "3", "4", "--stack", *common]) == 0
    out = capsys.readouterr().out
    assert out.count("finished: ") == 2 and "seed 3 finished" in out and "seed 4 finished" in out
    dones = [json.loads(p.read_text()) for p in tmp_path.glob("*/done.json")]
    assert len(dones) == 2 and {d["stack_size"] for d in dones} == {2}
    for argv, msg in [(["--seeds", "1", "1"], "names a seed twice"),
                      (["--stack"], "give them with --seeds"),
                      (["--seeds", "1", "2", "--run-dir", str(tmp_path / "x")], "drop --run-dir"),
                      (["--seeds", "1", "2", "--stack", "--set", "seed=9"], "drop --set seed=...")]:
        code = main(["train", toy, *argv, *common])
        err = capsys.readouterr().err
        assert code == 2 and err.strip().splitlines() == [err.strip()] and msg in err
    assert len(list(tmp_path.glob("*/done.json"))) == 2   # the refused commands trained nothing


def test_a_non_finite_loss_stops_the_stack_naming_the_run_before_any_weight_moves(tmp_path, monkeypatch):
    from gclib.step import NonFiniteLossError
    cfgs = _cfgs(tmp_path, RUNS[:2], checkpoint_every=5)
    original = stack_mod.consistency_loss
    calls = {"n": 0}

    def poisoned(*a, **kw):   # from step 8 on, the second run's rows are NaN
        out = original(*a, **kw)
        calls["n"] += 1
        if calls["n"] >= 8:
            out = out.clone()
            out[out.shape[0] // 2:] = float("nan")
        return out
    monkeypatch.setattr(stack_mod, "consistency_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 8 of s_ot_0_0 \(nan\)"):
        train_stack(cfgs)
    # the last checkpoint (step 5) stands, and both runs resume from it
    assert all(sorted(p.name for p in d.glob("checkpoints/*.pt")) == ["ckpt-00000005.pt"]
               for d in (tmp_path / "runs").iterdir())


# ------------------------------------------------------------------- flows read from the coupling entries
class _Widened(Coupling):
    """A plugin-like coupling without a predictor: the noise multiplied by its own setting ``width``."""

    def __init__(self, width: float = 1.0):
        self.width = float(width)

    def pair(self, x, z, **_):
        return Pairs(x, self.width * z, torch.zeros(x.shape[0], dtype=torch.bool, device=x.device))


class _OwnRule(GC):
    """Needs a predictor but pairs by its own rule (every row predicted at twice its level)."""

    def pair(self, x, z, *, sigma=None, predictor=None, **kw):
        return super().pair(x, z, sigma=2 * sigma, predictor=predictor, **kw)


class _GCAgain(GC):
    """GC under another name, its rule unchanged."""


@pytest.fixture
def plugin_flows():
    for name, cls in (("widened", _Widened), ("own_rule", _OwnRule), ("gc_again", _GCAgain)):
        register_coupling(name, cls)
    yield
    for name in ("widened", "own_rule", "gc_again"):
        unregister_coupling(name)


def test_a_stack_trains_what_the_coupling_entries_say(tmp_path, plugin_flows):
    runs = [dict(flow="widened", seed=0, coupling_options={"width": 3.0}), dict(flow="gc_again", mu=0.5, seed=0),
            dict(flow="ic", seed=0)]
    alone = [train(c) for c in _cfgs(tmp_path / "alone", runs)]
    stacked = train_stack(_cfgs(tmp_path / "stack", runs))
    for a, s in zip(alone, stacked):   # the plugin coupling's own pairing, GC's rule under another name
        assert _max_diff(_weights(a)["model"], _weights(s)["model"]) < 1e-5
    assert _max_diff(_weights(stacked[0])["model"], _weights(stacked[2])["model"]) > 1e-2   # not IC's pairs
    gc_fraction = [float(line.split(",")[4]) for line in stacked[1].metrics_csv.read_text().splitlines()[1:]]
    assert 0 < sum(gc_fraction) / len(gc_fraction) < 1


def test_a_coupling_whose_rule_a_stack_cannot_write_out_is_refused_in_one_line(tmp_path, plugin_flows):
    cfgs = _cfgs(tmp_path, [dict(flow="ic", seed=0), dict(flow="own_rule", seed=1)])
    with pytest.raises(ConfigError, match=r"^run 's_own_rule_0_1': flow 'own_rule' needs a predictor and pairs by "
                                          r"its own rule \(_OwnRule.pair\); .* train it without a stack$"):
        train_stack(cfgs)
    assert not (tmp_path / "runs").exists()
    assert stack_mod.stack_refusal(load_config(None, cfgs[0])) is None
