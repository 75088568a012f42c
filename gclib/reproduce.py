"""``make reproduce``: run every notebook with each of its cpu parameter sets through papermill into
results/<notebook>/<variant>/, then write results/README.md: the figures, and each paper claim against what
was measured here (from the notebooks' metrics.json)."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from unittest.mock import patch

from .io import relative_to_cwd, write_json, write_text
from .rundir import TRAINED_BY_ENV
from .report import project_root

NOTEBOOK_ORDER = ("toy_flows", "ct_cd_gap", "transport_cost", "fid_curves")


def _notebooks(root: Path) -> list[Path]:
    found = {p.stem: p for p in (root / "notebooks").glob("*.ipynb")}
    return [found[n] for n in NOTEBOOK_ORDER if n in found] + [p for n, p in sorted(found.items()) if n not in NOTEBOOK_ORDER]


LONG = "_long"   # params/<notebook>/cpu_long*.yaml: the long CPU profiles (``make reproduce-long``), ~1 h each


def variant_files(root: Path, notebook: str, long: bool = False) -> list[Path]:
    """The parameter sets ``make reproduce`` runs for a notebook: params/<notebook>/cpu*.yaml without the long
    profiles (``long=False``), or only the long profiles (``long=True``)."""
    files = sorted((root / "params" / notebook).glob("cpu*.yaml"))
    return [p for p in files if (LONG in p.stem) == long]


def reproduce(root=None, long: bool = False, only: str | None = None, variants=None, status: bool = False,
              reanalyse: bool = False) -> int:
    """Run the notebooks (``only``: one of them) with their quick cpu parameter sets, or the long ones
    (``long=True``), or only the named ``variants``; then rewrite results/README.md. With ``long``, first print
    where each long profile stands in the run cache (``long_status``); ``status=True`` prints only that.
    ``reanalyse``: only the fid_curves notebook, each variant analysed from its committed curves and final
    evaluation (its ``reanalyse`` parameter) instead of trained."""
    root = project_root(root)
    if reanalyse:
        only = "fid_curves"
    if long or status:
        from .report import runs_dir
        print(f"run cache: {runs_dir(root)} (set GCLIB_RUNS to keep it outside the work tree)")
        for line in long_status(root, variants):
            print(line, flush=True)
        if status:
            return 0
    notebooks = _notebooks(root)
    if not notebooks:
        print("No notebooks yet in notebooks/: nothing to reproduce.")
        return 0
    import papermill as pm
    import yaml

    from .experiments.params import check_param_values

    plan = []  # every parameter set is checked before anything runs
    for nb in notebooks:
        if only and nb.stem != only:
            continue
        for params in variant_files(root, nb.stem, long):
            if variants and params.stem not in variants:
                continue
            parameters = yaml.safe_load(params.read_text()) or {}
            if reanalyse:
                parameters["reanalyse"] = True
            try:
                check_param_values(nb.stem, parameters, root)
            except ValueError as e:
                raise ValueError(f"{params.relative_to(root)}: {e}") from None
            plan.append((nb, params, parameters))
    timings = {}
    for nb, params, parameters in plan:
        variant = parameters.setdefault("variant", params.stem)
        out = root / "results" / nb.stem / variant
        print(f"== {nb.relative_to(root)} with {params.relative_to(root)} -> {out.relative_to(root)}", flush=True)
        t0 = time.perf_counter()
        tag = f"reproduce-{variant}-{os.getpid()}-{time.time_ns()}"
        before = finished_runs(root, tag)
        _run_staged(pm, root, nb, out, parameters, tag)
        seconds, trained = time.perf_counter() - t0, len(finished_runs(root, tag) - before)
        if not reanalyse:   # a re-analysis keeps the timing of the run that trained the variant
            timings[f"{nb.stem}/{variant}"] = {"seconds": seconds, "runs_trained": trained}
        print(f"   done in {seconds:.0f} s ({trained} run{'s' * (trained != 1)} trained; any other run it used came "
              f"from the run cache)", flush=True)
    write_results_readme(root, timings, long)
    print(f"wrote {root / 'results' / 'README.md'}")
    return 0


def _run_staged(pm, root: Path, nb: Path, out: Path, parameters: dict, tag: str) -> None:
    """Execute notebook ``nb`` into a staged folder beside ``out`` (gclib.staging; the notebook finds it through
    $GCLIB_RESULTS_STAGE), executed notebook included, and replace ``out`` by it only when the notebook succeeded:
    a notebook that fails, or a reproduce that is stopped, leaves ``out`` byte for byte. A failed notebook's folder
    is kept, hidden beside ``out``, for its traceback (the error names it) until the next run cleans it up."""
    from .report import STAGE_ENV
    from .staging import Stage
    stage = Stage.begin(out)
    executed = stage.path / nb.name
    try:
        with patch.dict(os.environ, {TRAINED_BY_ENV: tag, STAGE_ENV: str(stage.path)}):   # the kernel inherits them
            pm.execute_notebook(relative_to_cwd(nb), relative_to_cwd(executed), parameters=parameters,
                                cwd=str(root / "notebooks"), kernel_name="python3", progress_bar=False)
        scrub_paths(executed, root, {stage.path.name: out.name})   # outputs that name the staged folder
    except Exception as e:
        stage.abandon(keep=executed.is_file())
        if executed.is_file():
            e.executed_notebook = relative_to_cwd(executed)   # the error line names it (gclib.cli)
        raise
    except BaseException:
        stage.abandon()
        raise
    stage.commit()


def run_state(run_dir: Path) -> tuple[str, int]:
    """("finished", step), ("partial", newest checkpoint step) or ("pending", 0) for one cached run directory."""
    from .rundir import RunPaths
    paths = RunPaths(Path(run_dir))
    if paths.done_json.is_file():
        return "finished", -1
    steps = paths.checkpoint_steps()
    return ("partial", max(steps)) if steps else ("pending", 0)


def _seconds_per_step(run_dirs) -> float | None:
    """Median training seconds per step of the runs among ``run_dirs`` that have trained (their metrics.csv's
    last row: seconds since the run's start, evaluations included), or None."""
    import csv
    import statistics
    from .rundir import RunPaths
    rates = []
    for d in run_dirs:
        if not RunPaths(Path(d)).metrics_csv.is_file():
            continue
        with open(RunPaths(Path(d)).metrics_csv) as f:
            rows = list(csv.DictReader(f))
        if len(rows) > 100 and float(rows[-1]["seconds"]) > 0:
            rates.append(float(rows[-1]["seconds"]) / int(rows[-1]["step"]))
    return statistics.median(rates) if rates else None


def _similar_runs(runs: Path, base: dict):
    """Run directories in ``runs`` whose config has base's data set, model and batch size (same cost per step)."""
    import yaml
    from .rundir import RunPaths
    for d in runs.glob("*"):
        try:
            c = yaml.safe_load(RunPaths(d).config_yaml.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if all(c.get(k) == base.get(k) for k in ("dataset", "model", "batch_size")):
            yield d


def long_status(root=None, variants=None) -> list[str]:
    """One line per long fid_curves profile: how many of its runs are finished, partly trained (resumed from
    their newest checkpoint) or not started in the run cache, and the estimated time left with the profile's
    workers (from the seconds per step of runs finished on this machine). A run shared by two profiles is
    counted in the first that lists it."""
    from .config import run_dir_for
    from .experiments.fid_curves import run_config, sweep_from_params
    root = project_root(root)
    seen, lines = set(), []
    for params in variant_files(root, "fid_curves", long=True):
        if variants and params.stem not in variants:
            continue
        sw = sweep_from_params(params, root=root)
        dirs = []
        for run in sw.runs():
            d = run_dir_for(run_config(sw.base, run))
            if d not in seen:
                seen.add(d)
                dirs.append(d)
        states = [run_state(d) for d in dirs]
        done = sum(s == "finished" for s, _ in states)
        partial = [k for s, k in states if s == "partial"]
        total = int(sw.base["total_steps"])
        left = sum(total - k for s, k in states if s != "finished")
        rate = _seconds_per_step(dirs) or _seconds_per_step(_similar_runs(Path(sw.base["runs_dir"]), sw.base))
        eta = (f"about {left * rate / sw.workers / 3600:.1f} h left with {sw.workers} worker(s) "
               f"({rate:.3f} s per step measured here)" if rate and left else
               "nothing left to train" if not left else "time left unknown (no run has trained here yet)")
        lines.append(f"fid_curves/{params.stem}: {len(dirs)} runs of its own: {done} finished, {len(partial)} partly "
                     f"trained{' (resume at steps ' + ', '.join(map(str, sorted(partial))) + ')' if partial else ''}, "
                     f"{len(dirs) - done - len(partial)} not started; {eta}")
    return lines


def finished_runs(root: Path, trained_by: str | None = None) -> set:
    """{(run directory name, done.json's mtime)} of every finished run in the run cache: the runs a notebook trains
    are those that appear (or are finished again) while it runs, so a timing can say how much was cached. With
    ``trained_by``, only runs whose done.json carries that tag (written under ``$GCLIB_TRAINED_BY``), so that runs
    another process finishes in the same cache meanwhile (a background sweep) are not counted as the notebook's."""
    from .report import runs_dir
    from .rundir import read_json_guarded
    return {(p.parent.name, p.stat().st_mtime_ns) for p in runs_dir(root).glob("*/done.json")
            if trained_by is None or (read_json_guarded(p) or {}).get("trained_by") == trained_by}


def scrub_paths(ipynb: Path, root: Path, renames: dict | None = None) -> None:
    """Replace this machine's absolute project path (and home folder) in a stored notebook by relative ones, so
    committed outputs carry no machine-specific paths (warnings print the file they come from); ``renames``:
    other text to replace (the staged results folder's name by the final one)."""
    text = Path(ipynb).read_text()
    for prefix, repl in ((str(Path(root).resolve()) + "/", ""), (str(Path(root).resolve()), "."),
                         (str(Path.home()) + "/", "~/"), *(renames or {}).items()):
        text = text.replace(prefix, repl)
    write_text(ipynb, text)


def _claim_rows(root: Path):
    for nb in NOTEBOOK_ORDER:
        for m in sorted((root / "results" / nb).glob("*/metrics.json")):
            if m.parent.name == "default" or m.parent.name.startswith("."):   # hidden: a staged run's folder
                continue
            data = json.loads(m.read_text())
            note = superseded(root, nb, m.parent.name, data)
            for c in data.get("claims", []):
                yield nb, m.parent.name, ({**c, "measured": f"{c['measured']} ({note})", "superseded": True}
                                           if note else c)


def superseded(root: Path, nb: str, variant: str, metrics: dict) -> str | None:
    """A note when committed results no longer answer their parameter file: a pre-registered profile whose
    results predate its pre-registration (other seeds, or no pre-registered endpoints). None when current."""
    import yaml
    params = root / "params" / nb / f"{variant}.yaml"
    if not params.is_file() or "seeds" not in metrics:
        return None
    p = yaml.safe_load(params.read_text()) or {}
    if not p.get("preregistration"):
        return None
    if metrics.get("preregistration") and list(metrics["seeds"]) == list(p.get("seeds", [])):
        return None
    return (f"SUPERSEDED: an earlier run on seeds {metrics['seeds']}, before the profile was pre-registered with "
            f"{len(p.get('seeds', []))} seeds and its endpoints; not evidence for the pre-registered rows, which "
            f"replace it when all their runs are trained")


# Table 1 of the paper (one-step FID, mu = 0.5) and the parameter set that measures each row on a GPU node.
PAPER_TABLE1 = {
    "CIFAR-10": {"IC": 7.42, "OT": 6.75, "GC": 5.95, "params": "params/fid_curves/gpu.yaml",
                 "train": "params/train/cifar10.yaml --flow gc"},
    "ImageNet 32": {"IC": 14.89, "OT": 14.13, "GC": 13.99, "params": "params/fid_curves/gpu_imagenet32.yaml",
                    "train": "params/train/imagenet32.yaml --flow gc"},
    "CelebA 64": {"IC": 15.82, "OT": 13.63, "GC": 11.74, "params": "params/fid_curves/gpu_celeba64.yaml",
                  "train": "params/train/celeba64.yaml --flow gc"},
    "LSUN Church 64": {"IC": 10.58, "OT": 9.71, "GC": 9.88, "params": "params/fid_curves/gpu_lsun_church64.yaml",
                       "train": "params/train/lsun_church64.yaml --flow gc"},
}
GPU_COMMAND = "papermill notebooks/fid_curves.ipynb out.ipynb -f {params}; one run: torchrun --nproc_per_node=8 -m gclib train {train}"
TABLE2_COMMAND = ("torchrun --nproc_per_node=8 -m gclib train params/train/cifar10_denoise.yaml, then "
                  "params/train/cifar10_ect.yaml --flow ic and --flow gc (GC at mu = 0.3)")


def _table1_rows(root: Path) -> list[str]:
    rows = ["## Table 1 (one-step FID, mu = 0.5) and Table 2 (ECT fine-tuning): the paper against this machine", "",
            "| table | data set | paper IC | paper OT | paper GC | here | verdict |", "|---|---|---|---|---|---|---|"]
    for name, t in PAPER_TABLE1.items():
        m = root / "results" / "fid_curves" / Path(t["params"]).stem / "metrics.json"
        if m.is_file():
            fin = json.loads(m.read_text()).get("final", {})
            here = ", ".join(f"{k} {v['mean']:.3g}" for k, v in fin.items())
            verdict = f"see the fid_curves/{Path(t['params']).stem} rows above"
        else:
            here = "not run here: needs a GPU"
            verdict = "not run: `" + GPU_COMMAND.format(**t) + "`"
        rows.append(f"| 1 | {name} | {t['IC']} | {t['OT']} | {t['GC']} | {here} | {verdict} |")
    rows.append("| 2 | CIFAR-10, ECT fine-tuning | ECT (IC) | - | GC best at mu = 0.3 | not run here: needs a GPU | "
                f"not run: `{TABLE2_COMMAND}` |")
    return rows + [""]


def _central_question(root: Path) -> list[str]:
    """The central question's section: the forest plot of every paired difference of the pre-registered digits
    profiles (redrawn from their metrics.json), their primary rows with the family-wise verdicts, and the
    pre-registered profiles that have no results yet."""
    import yaml
    from .experiments.forest import central_table, forest_plot, forest_rows, timing_table
    table = central_table(root)
    if not table:
        return []
    png = forest_plot(forest_rows(root), root / "results" / "fid_curves" / "forest.png")
    pending = []
    for p in sorted((root / "params" / "fid_curves").glob("cpu_long*.yaml")):
        d = yaml.safe_load(p.read_text()) or {}
        if d.get("preregistration") and not (root / "results" / "fid_curves" / d.get("variant", p.stem) /
                                             "metrics.json").is_file():
            pending.append(f"- **{d.get('variant', p.stem)}** (pre-registered {d['preregistration'].get('date')}, "
                           f"{len(d.get('seeds', []))} seeds): no results committed yet; its rows will join this "
                           f"table when all its runs are trained (`make reproduce-status`).")
    return (["## The central question: does GC train better and faster than IC and OT on digits?", "",
             "Every paired difference of the pre-registered digits profiles: filled diamonds are primary rows, "
             "coloured by their family-wise verdict (Holm over the profile's primary rows, family-wise error 0.10); "
             "open markers are secondary and exploratory rows, coloured by their own unadjusted verdict. A profile "
             "whose seeds were seen before its pre-registration, or that shares seeds or runs with another, says so "
             "below the table; such rows are not independent evidence.", ""]
            + ([f"![forest plot](fid_curves/{png.name})", ""] if png else [])
            + ["Primary rows:", ""] + table + pending + ([""] if pending else [])
            + ["Training time of a run (each run's done.json, collected in the profile's runs.csv):", ""]
            + timing_table(root))


def _verdict(c: dict) -> str:
    v = c.get("verdict") or ("holds" if c.get("holds") else "refuted")
    return v if v == "holds" else f"**{v}**"


REPRODUCIBILITY = (
    "**What a reproduction reproduces.** Every model is trained from its configuration's seeds, so the random draws "
    "are the same on every machine; the last bits of the arithmetic are not (torch, MKL and oneDNN pick their kernels "
    "by processor, and more threads sum in another order). These files are reproduced **bit for bit** only on the "
    "platform that wrote them: the same CPU model, torch and library builds (constraints.txt) and thread counts. On "
    "another CPU the **verdicts must hold** and the **numbers move** by what training makes of different last bits. "
    "Measured on a fresh clone on an Intel Xeon (AVX512-BF16/FP16): the metric check (no training) moved by rounding "
    "only, FD_digits of held-out digits 9.44964834340044 -> 9.449647887130823 (4.8e-8 relative), while cpu_digits' "
    "final FD_digits moved GC 50.98 -> 52.24 and IC 51.84 -> 51.77; 14 CSVs differed and 0 of 53 verdicts changed. "
    "`make reproduce-compare` (a fresh reproduction in a temporary clone) or `gclib reproduce --compare` (after `make "
    "reproduce`) sets a reproduction against these files in one table: changed verdicts (a failure), the metric "
    "check's drift and each number's relative drift.")


def write_results_readme(root: Path, timings: dict | None = None, long: bool = False) -> Path:
    """results/README.md from whatever results/<notebook>/<variant>/ hold (default variants excluded). Timings of
    this invocation are merged into results/timings.json, so the long profiles and the quick ones both show."""
    results = root / "results"
    tfile = results / "timings.json"
    all_t = json.loads(tfile.read_text()) if tfile.is_file() else {}
    if timings:
        import os
        import torch
        from .machine import cpu_info
        machine = f"{cpu_info()['model_name']}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
        for k, v in timings.items():
            v = v if isinstance(v, dict) else {"seconds": v}
            all_t[k] = {"seconds": round(v["seconds"]), "machine": machine,
                        **({"runs_trained": int(v["runs_trained"])} if "runs_trained" in v else {})}
        write_json(tfile, all_t)
    lines = ["# Results measured on this machine", "",
             "Written by `make reproduce` and `make reproduce-long` (gclib/reproduce.py) from each notebook's "
             "`metrics.json`; every verdict is computed from the measurement, none is typed in. Comparative claims "
             "are judged by paired differences over seeds with a 90% Student-t interval: **holds** when the interval "
             "excludes 0 in the paper's direction, **refuted** when it excludes 0 the other way, **inconclusive** "
             "otherwise.", "", REPRODUCIBILITY, ""]
    if all_t:
        lines += ["A notebook reuses the models it finds trained in runs/ (a cache, not committed), so its wall time "
                  "depends on what was cached: the third column says how many runs it trained itself.", "",
                  "| notebook / variant | wall time (s) | runs trained | machine |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['seconds']} | {v.get('runs_trained', '-')} | {v['machine']} |"
                  for k, v in sorted(all_t.items())] + [""]
    lines += _central_question(root)
    lines += ["## Paper claims against what was measured here", "",
              "`endpoint` says whether a row is a **primary** or secondary endpoint of a profile that fixed its "
              "endpoints and seeds before its runs (`preregistration` in params/fid_curves/cpu_long*.yaml), exploratory "
              "a row added after them (not pre-registered), and `n` "
              "the number of paired seeds behind a paired row; a run that is evidence in another profile's rows is "
              "named in the measured column. `family-wise` is a primary row's verdict under Holm's correction over its "
              "profile's primary rows (family-wise error 0.10); other rows are not adjusted.", "",
              "| notebook | variant | claim | endpoint | n | verdict | family-wise | measured |",
              "|---|---|---|---|---|---|---|---|"]
    for nb, variant, c in _claim_rows(root):
        role = {"primary": "**primary**", "secondary": "secondary", "exploratory": "exploratory"}.get(c.get("role"), "-")
        verdict = f"superseded (was {c['verdict']})" if c.get("superseded") else _verdict(c)
        holm = c.get("verdict_holm", "-")
        holm = "-" if holm.startswith("unadjusted") else holm if holm != "holds" else "holds"
        lines.append(f"| {nb} | {variant} | {c['claim']} | {role} | {c.get('n', '-')} | {verdict} | {holm} | "
                     f"{c['measured']} |")
    lines.append("")
    lines += _table1_rows(root)
    for nb in NOTEBOOK_ORDER:
        for d in sorted(p for p in (results / nb).glob("*") if p.is_dir() and p.name != "default"
                        and not p.name.startswith(".")):
            pngs = sorted(d.glob("*.png"))
            if not pngs:
                continue
            lines += [f"## {nb} / {d.name}", "", f"Executed notebook: [{nb}.ipynb]({nb}/{d.name}/{nb}.ipynb)", ""]
            lines += [f"![{p.stem}]({nb}/{d.name}/{p.name})" for p in pngs] + [""]
    return write_text(results / "README.md", "\n".join(lines))
