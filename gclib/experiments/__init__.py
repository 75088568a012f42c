"""Experiment drivers behind the notebooks: each module turns gclib's metrics into the tables (pandas
DataFrames) and claim verdicts one notebook plots and reports. Notebooks only call these and plot.

- ``common``: the training configuration a notebook uses (the preset params/train/<family>.yaml composed with the
  flow), the trained model (cached by config hash) and its finite training set, and the claim record written to
  metrics.json.
- ``ct_cd_gap``: Theorem 1 (the scaled CT/CD gap against N and its predicted limit) and the gap proxy per flow.
- ``transport_cost``: c(t) of a trained model against IC, minibatch-OT and exact-OT costs (Fig. 3).
- ``toy_flows``: Fig. 1, the alignment of GC, OT and IC paths with the exact PF-ODE velocity on two Diracs.
- ``fid_curves``: training sweeps over flows, mu and frozen predictors with their evaluation curves (Figs. 4-5,
  Table 1), their paired claims, the FD_digits metric check, and the FID evaluation hook for GPU runs.
- ``params``: ``check_params``, the one check of a notebook's parameters (names, types, ad-hoc variants).
- ``spec``: each driver's parameters declared once (``Spec`` of ``Param``s: default, doc, rule, whether it
  sets a Config field of every run or is a table column); setup, the sweep and the table derive from it.
- ``verdicts``: how every theory row is judged (bounds never refute the wrong way; a control not rejected caps
  the row). ``gclib.claims.judge`` runs the theory rows of toy_flows, ct_cd_gap and transport_cost on any model.
"""

from .params import check_param_values, check_params, notebook_parameters  # noqa: E402

__all__ = ["check_params", "check_param_values", "notebook_parameters"]
