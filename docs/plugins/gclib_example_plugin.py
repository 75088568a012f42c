"""An example gclib plugin: a coupling, a metric and a data set, registered from outside gclib (docs/extending.md).

Nothing of gclib is edited; gclib imports this module wherever a run is configured (``gclib.plugins``):

    GCLIB_PLUGINS=gclib_example_plugin PYTHONPATH=docs/plugins \\
        gclib train params/train/toy.yaml --flow reverse_ot --set dataset=ring --set eval_metrics=[energy]

or name the file itself: ``GCLIB_PLUGINS=docs/plugins/gclib_example_plugin.py``; an installed package names it in
its entry points instead (``[project.entry-points."gclib.plugins"]``). tests/test_plugins.py copies this file to a
temporary folder and trains with it from the command line and in a two-worker fid_curves sweep.

- ``reverse_ot``: pairs x with -z by exact minibatch OT, so every path crosses the data's middle (a deliberately
  bad flow). It permutes the noise and solves its pairing ahead of the step, as OT does.
- ``energy``: the energy distance 2 E||X - Y|| - E||X - X'|| - E||Y - Y'|| between the samples and the data
  (V-statistics, exact for the two empirical measures).
- ``ring``: a 2-D point set on the circle of radius 0.5 around (0.5, 0), scored by ``energy``.
"""
import math

import torch

from gclib.couplings import Coupling, Pairs, ot_permutation, register_coupling
from gclib.data import DataSet, register_dataset
from gclib.evaluation import Metric, register_metric


class ReverseOT(Coupling):
    """Exact minibatch OT between x and -z: z permuted to minimise sum_k ||x_k + z_perm(k)||^2."""
    permutes_noise = True          # the returned noise rows are z's in another order
    solves_ahead = True            # the pairing depends on (x, z) alone: gclib.prefetch solves it during the step before
    settings = ("ot_solver",)      # built from the config's ot_solver (so that field is part of its runs' identity)

    def __init__(self, ot_solver: str = "auto"):
        self.solver = ot_solver

    def solve(self, x, z):
        return ot_permutation(x, -z, self.solver)

    def pair(self, x, z, *, ot_perm=None, **_):
        perm = self.solve(x, z) if ot_perm is None else ot_perm.to(z.device)
        return Pairs(x, z[perm], torch.zeros(x.shape[0], dtype=torch.bool, device=x.device))


def _mean_distance(a: torch.Tensor, b: torch.Tensor, chunk: int = 1024) -> float:
    b = b.reshape(len(b), -1).double()
    total = sum(float(torch.cdist(part, b).sum()) for part in a.reshape(len(a), -1).double().split(chunk))
    return total / (len(a) * len(b))


def energy(samples: torch.Tensor, data: torch.Tensor) -> float:
    """The energy distance between the empirical measures of ``samples`` and ``data`` (>= 0, 0 for equal sets)."""
    return 2 * _mean_distance(samples, data) - _mean_distance(samples, samples) - _mean_distance(data, data)


def ring(n: int, seed: int) -> torch.Tensor:
    """n points on the circle of radius 0.5 around (0.5, 0), jittered by 0.01, (n, 2) float32, drawn from ``seed``."""
    g = torch.Generator().manual_seed(int(seed) % 2 ** 64)
    angle = 2 * math.pi * torch.rand(n, generator=g)
    points = 0.5 * torch.stack([torch.cos(angle), torch.sin(angle)], 1) + torch.tensor([0.5, 0.0])
    return points + 0.01 * torch.randn(n, 2, generator=g)


register_coupling("reverse_ot", ReverseOT)
register_metric(Metric("energy", energy, "energy distance", curve=True))
register_dataset(DataSet("ring", lambda root, download, n, seed: ring(n, seed), (2,), model="mlp", metric="energy",
                         family="toy"))
