"""Several runs of one architecture trained in one process, each network call batched over the runs.

    results = train_stack([cfg_ic_s0, cfg_ot_s0, cfg_gc_s0, ...])   # -> list of TrainResult, in order

On a GPU, one step of the 0.6M-parameter digits U-Net is launch-bound: about 2000 small kernels whatever the batch
(results/bench, section 6). A stack of K runs holds their weights as (K, ...) tensors and evaluates the K networks
as one (``torch.func.functional_call`` under ``torch.func.vmap``; a convolution with batched weights becomes one
grouped convolution), so a step of K runs makes a few times the calls of one run's step, not K times (on a CPU,
K = 10: 23,000 aten calls against 11,000). The optimiser (Adam or Lion act element by element) and the EMA act on
the stacked tensors directly.

Each run stays itself: its own run directory, configuration hash, data order, random streams (noise, intervals,
GC mask, drawn on the CPU exactly as ``gclib.train`` draws them), OT pairing (``gclib.prefetch``), predictor,
evaluation, checkpoints and done.json. Checkpoints are written in ``gclib.train``'s format by its own stages, so a
run started in a stack resumes alone and the other way round. A stacked run is the same experiment as the run
alone (the same configuration hash) but not the same bits: the batched kernels sum in another order, so on a CPU its
weights differ from the run alone's by about 1e-6 after 30 steps (tests/test_stack.py), and as training goes on the
two drift apart as runs on two devices do. Dropout masks come from the process's generator, shared by the stack.

What may differ between the runs of a stack: the seed, name and run directory, the flow, its settings, the
frozen predictor's checkpoint, the data set (of one shape) and the evaluation, sample and checkpoint schedules.
Everything else that shapes the computation (``MUST_AGREE``) must be equal; the consistency objective with the iCT
schedule only (``objective: consistency``, ``schedule: ict``), on one process (no torchrun) and without the CUDA
speed flags (bf16, channels_last, compile). Anything else is refused with one line before any run is touched.

The flows a stack trains are read from the coupling entries' capabilities (``gclib.couplings.Coupling``), never
from their names: a coupling without a predictor (``needs_predictor`` false: IC, OT, a plugin's) pairs each run's
batch itself, on the CPU as ``gclib.train`` does, its pairing solved ahead (``gclib.prefetch``) when it
``solves_ahead`` and ``ot_prefetch`` is on; a coupling that needs a predictor is trained by GC's rule (a
Bernoulli(mu) mask of rows whose endpoint the predictor gives at the pair's lower level), which the stack writes out
so that the K predictors run as one stacked call: one that pairs by another rule (it overrides ``GC.pair``, or is no
``GC``) is refused (``stack_refusal``).
"""
from __future__ import annotations

import copy
import math
import os
import time
from collections import defaultdict
from typing import Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap

from . import distributed, machine
from .config import Config, ConfigError, as_config, config_hash, part, preflight, run_dir_for
from .couplings import GC, REGISTRY as COUPLINGS, gc_mask
from .ema import blend
from .losses import consistency_loss, ct_points
from .objectives import draw_noise
from .optim import make_optimizer
from .precond import as_batch_sigma, pad_dims
from .prefetch import OTPrefetcher
from .rundir import RunPaths
from .schedules import loss_weights, sample_intervals
from .step import NonFiniteLossError
from .train import (RunState, TrainResult, _checkpoint, _checkpoint_due, _close_logs, _finish, _finished, _lock,
                    _open_logs, _record_step, _resume, _setup, _side_tasks, _side_tasks_due, _stop, _stop_signal)

__all__ = ["train_stack", "train_stack_job", "StackedModel", "MUST_AGREE", "check_stackable"]

# the fields that shape a stacked step: equal in every run of a stack
MUST_AGREE = ("model", "hidden", "depth", "emb_dim", "channels", "channel_mult", "num_blocks", "attn_resolutions",
              "dropout", "train_boundary", "sigma_min", "sigma_max", "sigma_data", "rho", "s0", "s1", "p_mean", "p_std",
              "distance", "objective", "schedule", "optimizer", "lr", "betas", "weight_decay", "eps", "batch_size",
              "total_steps", "ema_decay", "ema_every", "device", "bf16", "channels_last", "compile")


def _by_gc_rule(cfg: Config) -> bool:
    """Whether the run's coupling needs a predictor (its entry's ``needs_predictor``): the stack then pairs its rows
    by GC's rule, with the stacked predictor."""
    return COUPLINGS[cfg.flow].needs_predictor


def stack_refusal(cfg: Config) -> str | None:
    """Why the coupling of run ``cfg`` cannot train in a stack (None when it can), read from its registry entry: a
    coupling that needs a predictor must pair by GC's rule (``GC.pair``), which the stack writes out for K
    predictors at once; any coupling without a predictor is called as it is."""
    entry = COUPLINGS[cfg.flow]
    if entry.needs_predictor and not (issubclass(entry, GC) and entry.pair is GC.pair):
        return (f"flow {cfg.flow!r} needs a predictor and pairs by its own rule ({entry.__name__}.pair); a stack "
                f"runs the predictors of its runs together only for GC's rule (gclib.couplings.GC): train it "
                f"without a stack")
    return None


def _predictor_kind(cfg: Config) -> str:
    return cfg.predictor if cfg.predictor in ("ema", "online") else "frozen"


def check_stackable(cfgs: Sequence[Config]) -> None:
    """Raise ConfigError (one line) unless the configurations can train as one stack."""
    if not cfgs:
        raise ConfigError("a stack needs at least one run")
    first = cfgs[0]
    for c in cfgs[1:]:
        bad = [f for f in MUST_AGREE if getattr(c, f) != getattr(first, f)]
        if bad:
            raise ConfigError(f"runs {first.name!r} and {c.name!r} cannot share a stack: they differ in "
                              f"{', '.join(f'{f} ({getattr(first, f)!r} vs {getattr(c, f)!r})' for f in bad)}")
    for c in cfgs:
        if c.objective != "consistency" or c.schedule != "ict":
            raise ConfigError(f"run {c.name!r}: a stack trains the consistency objective with the ict schedule, not "
                              f"objective={c.objective!r}, schedule={c.schedule!r}")
        why = stack_refusal(c)
        if why:
            raise ConfigError(f"run {c.name!r}: {why}")
        for flag in ("bf16", "channels_last", "compile"):
            if getattr(c, flag):
                raise ConfigError(f"run {c.name!r}: {flag}=true is not supported in a stack")
    kinds = {_predictor_kind(c) for c in cfgs if _by_gc_rule(c)}
    if len(kinds) > 1:
        raise ConfigError(f"the GC runs of a stack must share one kind of predictor (ema, online or a frozen "
                          f"checkpoint), not {sorted(kinds)}")
    dirs = [str(run_dir_for(c)) for c in cfgs]
    if len(set(dirs)) < len(dirs):
        raise ConfigError(f"two runs of a stack share a run directory: {sorted(d for d in dirs if dirs.count(d) > 1)}")


class StackedModel:
    """K networks of one architecture as one callable: ``f(x, sigma)`` with x (K * B, ...), rows k*B .. (k+1)*B - 1
    belonging to network k, and sigma a float or (K * B,). ``params`` / ``buffers``: name -> (K, ...) tensors
    (``torch.func.stack_module_state`` of the K modules)."""

    def __init__(self, modules: Sequence[torch.nn.Module], requires_grad: bool):
        params, buffers = stack_module_state(list(modules))
        self.params = {k: v.detach().requires_grad_(requires_grad) for k, v in params.items()}
        self.buffers = buffers
        self.k = len(modules)
        self._base = copy.deepcopy(modules[0]).to("meta")
        self._call = vmap(self._one, randomness="different")

    def _one(self, params, buffers, x, sigma):
        return functional_call(self._base, (params, buffers), (x, sigma))

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = as_batch_sigma(sigma, x)
        if x.shape[0] % self.k:
            raise ValueError(f"a stack of {self.k} networks takes a multiple of {self.k} rows, not {x.shape[0]}")
        b = x.shape[0] // self.k
        out = self._call(self.params, self.buffers, x.reshape(self.k, b, *x.shape[1:]), sigma.reshape(self.k, b))
        return out.reshape(x.shape)

    def tensors(self) -> list[torch.Tensor]:
        return list(self.params.values())

    @torch.no_grad()
    def copy_to(self, k: int, module: torch.nn.Module) -> None:
        """Write network k's weights into ``module`` (of the same architecture)."""
        for name, p in module.named_parameters():
            p.copy_(self.params[name][k])
        for name, b in module.named_buffers():
            b.copy_(self.buffers[name][k])


class _Stack:
    """The K runs' states and their stacked model, EMA, predictor and optimiser."""

    def __init__(self, states: list[RunState]):
        self.states = states
        self.k = len(states)
        first = states[0]
        self.cfg, self.device = first.cfg, first.device
        self.model = StackedModel([s.raw_model for s in states], requires_grad=True)
        self.ema = StackedModel([s.ema.model for s in states], requires_grad=False)
        self.optimizer = make_optimizer(params=self.model.tensors(), **part(self.cfg, "optim"))   # from its section
        self._load_optimizer_state()
        self.by_gc_rule = [_by_gc_rule(s.cfg) for s in states]
        gcs = [s for s, gc in zip(states, self.by_gc_rule) if gc]
        kind = _predictor_kind(gcs[0].cfg) if gcs else "ema"
        if kind == "frozen":  # every run gets a frozen network in its rows (a GC run's own; any for the others)
            self.predictor = StackedModel([s.predictor if gc else gcs[0].predictor
                                           for s, gc in zip(states, self.by_gc_rule)], requires_grad=False)
        else:
            self.predictor = self.ema if kind == "ema" else self.model
        self.needs_predictor = bool(gcs)
        self.prefetch = [OTPrefetcher(s.batches, s.streams.noise, s.loss.coupling.solve)
                         if s.loss.coupling.solves_ahead and s.cfg.ot_prefetch else None for s in states]

    def _load_optimizer_state(self) -> None:
        """The runs' optimiser states (after a resume) stacked into the stack's optimiser."""
        per_run = [s.optimizer.state_dict() for s in self.states]
        if not any(sd["state"] for sd in per_run):
            return
        if not all(sd["state"] for sd in per_run):
            raise ConfigError("the runs of a stack must all be fresh or all resumed")  # train_stack groups by step
        sd = copy.deepcopy(self.optimizer.state_dict())
        for i in sd["param_groups"][0]["params"]:
            entries = [r["state"][i] for r in per_run]
            sd["state"][i] = {key: (torch.stack([e[key] for e in entries]) if entries[0][key].ndim else
                                    entries[0][key].clone()) for key in entries[0]}
        self.optimizer.load_state_dict(sd)

    @torch.no_grad()
    def sync(self, k: int, optimizer: bool = False) -> None:
        """Copy run k's slice of the stack into its own modules (and optimiser state) for its stages."""
        st = self.states[k]
        self.model.copy_to(k, st.raw_model)
        self.ema.copy_to(k, st.ema.model)
        if not optimizer:
            return
        mine = dict(zip(self.model.params, st.raw_model.parameters()))
        for name, stacked in self.model.params.items():
            state = self.optimizer.state.get(stacked)
            if state:
                st.optimizer.state[mine[name]] = {key: (v[k].clone() if v.ndim else v.clone())
                                                  for key, v in state.items()}

    def draws(self, k: int, sigmas: torch.Tensor):
        """Run k's endpoints and noise as its coupling pairs them, intervals, the mask of its generated rows and
        that of the rows the stacked predictor gives (GC's rule), as ``gclib.train`` draws them."""
        st, c = self.states[k], self.states[k].cfg
        coupling = st.loss.coupling
        noise_gen, interval_gen, mask_gen = st.streams.noise, st.streams.intervals, st.streams.mask
        if self.prefetch[k] is not None:
            x, z, perm = self.prefetch[k].take()
        else:
            x = next(st.batches)
            perm = None
        indices = sample_intervals(sigmas, x.shape[0], interval_gen, c.p_mean, c.p_std)
        if self.prefetch[k] is None:
            z = draw_noise(x.shape, noise_gen, torch.device("cpu"), x.dtype)
        if not self.by_gc_rule[k]:   # the coupling pairs the batch itself (a pairing solved ahead given as ot_perm)
            pairs = coupling(x, z, sigma=sigmas[indices].to(x.dtype), generator=mask_gen, ot_perm=perm)
            return pairs.x, pairs.z, indices, pairs.gc_mask, torch.zeros(x.shape[0], dtype=torch.bool)
        if perm is not None:
            z = z[perm]
        mask = gc_mask(x.shape[0], coupling.mu, mask_gen, torch.device("cpu"))
        return x, z, indices, mask, mask

    def step(self, step: int) -> tuple[list[float], list[float], int, float]:
        """Optimiser step ``step`` (1-based) of every run: (losses, GC fractions, grid size, seconds)."""
        k = step - 1
        for st in self.states:
            st.loss.update_schedule(k)
        sigmas, n = self.states[0].loss.sigmas, self.states[0].loss.num_points
        t0 = time.perf_counter()
        x, z, idx, mask, predicted = (torch.cat(parts) for parts in zip(*(self.draws(r, sigmas)
                                                                            for r in range(self.k))))
        x, z = x.to(self.device, non_blocking=True), z.to(self.device, non_blocking=True)
        idx, mask, predicted = idx.to(self.device), mask.to(self.device), predicted.to(self.device)
        s = sigmas.to(device=self.device, dtype=torch.float64)
        sigma_lo, sigma_hi = s[idx].to(x.dtype), s[idx + 1].to(x.dtype)
        weight = loss_weights(s)[idx].to(x.dtype)
        if self.needs_predictor:
            live = predicted & (sigma_lo > 0)
            with torch.no_grad():
                x_hat = self.predictor(x + pad_dims(sigma_lo, x) * z, sigma_lo)
            x = torch.where(pad_dims(live, x), x_hat.to(x.dtype), x)
        x_lo, x_hi = ct_points(x, z, sigma_lo, sigma_hi)
        per_row = consistency_loss(self.model, x_lo, x_hi, sigma_lo, sigma_hi, weight, self.cfg.distance,
                                   reduce=False)
        losses = per_row.reshape(self.k, -1).mean(1)
        self.optimizer.zero_grad(set_to_none=True)
        values = losses.detach().cpu().tolist()
        bad = [(st.cfg.name, v) for st, v in zip(self.states, values) if not math.isfinite(v)]
        if bad:
            raise NonFiniteLossError(f"non-finite loss at step {step} of {', '.join(f'{r} ({v})' for r, v in bad)}: "
                                     f"the stack stopped before updating the weights")
        losses.sum().backward()
        self.optimizer.step()
        blend(self.ema.tensors(), self.model.tensors(), list(self.ema.buffers.values()),
              list(self.model.buffers.values()), k + 1, self.cfg.ema_every, self.cfg.ema_decay)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        fractions = mask.reshape(self.k, -1).float().mean(1).cpu().tolist()
        return values, fractions, n, time.perf_counter() - t0

    def close(self) -> None:
        for p in self.prefetch:
            if p is not None:
                p.close()


def _loop(stack: _Stack) -> None:
    from . import signals
    with signals.at_step_boundaries():   # a stop signal: every run's checkpoint at the step just done, then stop
        _steps(stack)


def _steps(stack: _Stack) -> None:
    cfg = stack.cfg
    start = stack.states[0].step
    for step in range(start + 1, cfg.total_steps + 1):
        losses, fractions, n, dt = stack.step(step)
        final = step == cfg.total_steps
        stop = 0 if final else _stop_signal(stack.states[0])
        for r, st in enumerate(stack.states):
            _record_step(st, step, n, losses[r], fractions[r], dt)
            due = any(_side_tasks_due(st, step, final))
            ckpt = _checkpoint_due(st, step, final)
            if due or ckpt or stop:
                stack.sync(r, optimizer=ckpt or bool(stop))
            if due:
                _side_tasks(st, step, final)
            if ckpt or stop:
                _checkpoint(st, step, scheduled=ckpt)
        if stop:
            _stop(stack.states, step, stop)


def _train_group(states: list[RunState]) -> list[TrainResult]:
    for st in states:
        st.model = st.raw_model
        _open_logs(st)
    stack = _Stack(states)
    try:
        _loop(stack)
    finally:
        stack.close()
        for st in states:
            _close_logs(st)
    for st in states:
        st.done_extra = {"stack_size": len(states)}
    return [_finish(st) for st in states]


def train_stack(configs: Sequence, data: torch.Tensor | None = None) -> list[TrainResult]:
    """Train the runs ``configs`` (Configs, dicts or YAML paths) as one stack; returns their ``TrainResult``s in
    order. Finished runs are skipped as ``train`` skips them; the others resume from their newest checkpoints, runs
    at one step training together (a stack per resume step, in order of the step). ``data`` as in ``train``.
    done.json records ``stack_size``, the number of runs the run trained with."""
    cfgs = [as_config(c) for c in configs]
    check_stackable(cfgs)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("a stack trains on one process: run it without torchrun")
    results: dict[int, TrainResult] = {}
    todo = []
    for i, c in enumerate(cfgs):
        done = _finished(c, config_hash(c), RunPaths(run_dir_for(c)))
        if done:
            results[i] = done
        else:
            preflight(c)
            todo.append(i)
    locks, states = [], {}
    try:
        for i in todo:
            c = cfgs[i]
            paths = RunPaths(run_dir_for(c))
            d, device = distributed.setup(c)
            locks.append(_lock(paths, d))
            done = _finished(c, config_hash(c), paths)  # another process may have finished it meanwhile
            if done:
                results[i] = done
                continue
            st = RunState(c, config_hash(c), paths, d, device, ())
            _setup(st, data)
            _resume(st)
            states[i] = st
        groups = defaultdict(list)
        for i, st in states.items():
            groups[st.step].append(i)
        device = next(iter(states.values())).device if states else None
        with machine.cpu_threads(device):   # gclib's thread count on the CPU, as train; the caller's put back after
            for step in sorted(groups):
                out = _train_group([states[i] for i in groups[step]])
                results.update(zip(groups[step], out))
    finally:
        for lock in locks:
            if lock:
                lock.release()
    return [results[i] for i in range(len(cfgs))]


def train_stack_job(cfgs: Sequence[dict], threads: int | None = None) -> list[tuple[str, int]]:
    """Worker entry point (module level, so a spawned process can import it): ``train_stack(cfgs)`` on ``threads``
    torch threads; [(eval.csv path, step)] per run."""
    from .plugins import load_plugins
    load_plugins()   # the user's couplings, metrics and data sets, in this process too
    if threads:
        torch.set_num_threads(threads)
    return [(str(r.eval_csv), int(r.step)) for r in train_stack(cfgs)]
