"""``gclib reproduce --compare``: a fresh reproduction's results set against the committed ones, in one table.

For every notebook/variant found in both folders:
- **verdicts**: each claim of metrics.json, matched by its text. A verdict that changed, or a claim that is gone, is a
  failure (exit status 1): verdicts must hold on any CPU.
- **metric check** (metric_check.csv: the frozen digits classifier on fixed image sets, no training): the relative
  drift of its numbers, which only floating-point rounding moves (about 1e-8 between an AMD EPYC and an Intel Xeon).
- **measured numbers**: each final score of metrics.json on its own row, and every other CSV and the rest of
  metrics.json as one row per file: how many numbers changed, the median and largest relative drift and where. They
  are bit-identical on the same CPU model and the same torch and library builds (``gclib.machine.fingerprint``) with
  the same thread counts; elsewhere training amplifies the last bits, and the numbers move by what the measurement's
  sensitivity to its training draw allows (the verdicts' intervals account for that).
A CSV whose rows or columns changed, or that is gone, cannot be compared and is a failure too.

The relative drift of a number is |fresh - committed| / max(|fresh|, |committed|) (0 when both are 0).
The committed results are git's (``HEAD:results/`` unless ``against`` names another commit or a folder).
"""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# one row of the table: kind, notebook/variant, what, compared, changed, drift (median / largest), where
HEADER = ("kind", "notebook/variant", "what", "compared", "changed", "relative drift (median / largest)",
          "largest: committed -> fresh")


@dataclass
class Comparison:
    rows: list = field(default_factory=list)        # table rows (tuples of HEADER's length)
    failures: list = field(default_factory=list)    # one line each
    notes: list = field(default_factory=list)       # variants found on one side only
    verdicts: int = 0
    verdicts_changed: int = 0
    files: int = 0
    files_changed: int = 0
    metric_check_drift: float | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


def drift(old: float, new: float) -> float:
    """|new - old| / max(|new|, |old|); 0 for equal numbers (NaN equals NaN), 1 when one of them is NaN or inf."""
    if old == new or (math.isnan(old) and math.isnan(new)):
        return 0.0
    if not (math.isfinite(old) and math.isfinite(new)):
        return 1.0
    return abs(new - old) / max(abs(new), abs(old))


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2g}" if isinstance(x, float) else str(x)


def _verdict(claim: dict) -> str:
    return claim.get("verdict") or ("holds" if claim.get("holds") else "refuted")


def _variants(folder: Path) -> set:
    """{notebook/variant} of the results folders under ``folder`` (results/<notebook>/<variant>/ with files)."""
    return {f"{d.parent.name}/{d.name}" for d in folder.glob("*/*") if d.is_dir() and d.name != "default"
            and d.parent.name != "bench" and any(p.suffix in (".csv", ".json") for p in d.iterdir())}


def _numeric_leaves(x, path: str = ""):
    """(path, number) of every int/float in a JSON value (bools and the claims left out)."""
    if isinstance(x, dict):
        for k, v in x.items():
            if k != "claims":
                yield from _numeric_leaves(v, f"{path}/{k}" if path else str(k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numeric_leaves(v, f"{path}[{i}]")
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path, float(x)


def _drift_row(kind: str, variant: str, what: str, pairs: list) -> tuple:
    """A table row from [(where, committed, fresh)] numbers."""
    drifts = [(drift(a, b), where, a, b) for where, a, b in pairs]
    changed = [d for d in drifts if d[0] > 0]
    if not changed:
        return (kind, variant, what, len(pairs), 0, "0", "-")
    top = max(changed, key=lambda d: d[0])
    return (kind, variant, what, len(pairs), len(changed),
            f"{_fmt(statistics.median(d[0] for d in drifts))} / {_fmt(top[0])}",
            f"{top[1]}: {top[2]!r} -> {top[3]!r}")


def _compare_claims(c: Comparison, variant: str, old: dict, new: dict) -> None:
    def keyed(claims):
        seen, out = {}, {}
        for cl in claims:
            n = seen[cl["claim"]] = seen.get(cl["claim"], 0) + 1
            out[(cl["claim"], n)] = _verdict(cl)
        return out
    a, b = keyed(old.get("claims", [])), keyed(new.get("claims", []))
    changed = 0
    for key, verdict in a.items():
        c.verdicts += 1
        if key not in b:
            c.failures.append(f"{variant}: the claim {key[0]!r} is missing from the fresh results")
            c.rows.append(("verdict GONE", variant, key[0], 1, 1, "-", f"{verdict} -> (missing)"))
            changed += 1
        elif b[key] != verdict:
            c.failures.append(f"{variant}: {key[0]!r} was {verdict}, is {b[key]}")
            c.rows.append(("verdict CHANGED", variant, key[0], 1, 1, "-", f"{verdict} -> {b[key]}"))
            changed += 1
    c.verdicts_changed += changed
    extra = [k[0] for k in b if k not in a]
    c.rows.append(("verdicts", variant, f"{len(a)} claims" + (f" (+{len(extra)} new in the fresh results)"
                                                              if extra else ""), len(a), changed, "-", "-"))


def _compare_metrics(c: Comparison, variant: str, old: dict, new: dict) -> None:
    _compare_claims(c, variant, old, new)
    a, b = dict(_numeric_leaves(old)), dict(_numeric_leaves(new))
    finals = [k for k in a if k.startswith("final/") and k.endswith("/mean")]
    for k in finals:       # the headline scores, one row each
        if k in b:
            c.rows.append(_drift_row("final score", variant, k[len("final/"):-len("/mean")], [(k, a[k], b[k])]))
    rest = [(k, a[k], b[k]) for k in a if k in b and k not in finals]
    gone = [k for k in a if k not in b]
    row = _drift_row("numbers", variant, "metrics.json (the rest)", rest)
    if gone:
        c.failures.append(f"{variant}/metrics.json: {len(gone)} numbers are missing from the fresh results, "
                          f"e.g. {gone[0]}")
        row = row[:6] + (f"{len(gone)} missing, e.g. {gone[0]}",)
    c.rows.append(row)


def _csv_pairs(old: Path, new: Path) -> tuple[list, int, str | None]:
    """([(where, committed, fresh)] of the numeric cells of two CSV files, how many other cells (text, booleans)
    differ, and why the files cannot be compared, or None). A cell is named by its row number, the row's first text
    cells and its column."""
    import pandas as pd
    a, b = pd.read_csv(old), pd.read_csv(new)
    if list(a.columns) != list(b.columns):
        return [], 0, f"columns changed: {list(a.columns)} -> {list(b.columns)}"
    if len(a) != len(b):
        return [], 0, f"rows changed: {len(a)} -> {len(b)}"
    is_number = lambda col: pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    numeric = [col for col in a.columns if is_number(a[col]) and is_number(b[col])]
    other = [col for col in a.columns if col not in numeric]
    pairs = []
    for i in range(len(a)):
        name = f"row {i + 1}" + (f" ({', '.join(str(a[col].iloc[i]) for col in other[:2])})" if other else "")
        pairs += [(f"{name} / {col}", float(a[col].iloc[i]), float(b[col].iloc[i])) for col in numeric]
    texts = int(sum((a[col].astype(str) != b[col].astype(str)).sum() for col in other))
    return pairs, texts, None


def _compare_csvs(c: Comparison, variant: str, old_dir: Path, new_dir: Path) -> None:
    for old in sorted(old_dir.glob("*.csv")):
        new = new_dir / old.name
        kind = "metric check" if old.name == "metric_check.csv" else "numbers"
        c.files += 1
        if not new.is_file():
            c.failures.append(f"{variant}/{old.name} is missing from the fresh results")
            c.rows.append((kind, variant, old.name, "-", "-", "-", "MISSING from the fresh results"))
            c.files_changed += 1
            continue
        pairs, texts, why = _csv_pairs(old, new)
        if why:
            c.failures.append(f"{variant}/{old.name}: {why}")
            c.rows.append((kind, variant, old.name, "-", "-", "-", f"CANNOT COMPARE: {why}"))
            c.files_changed += 1
            continue
        row = _drift_row(kind, variant, old.name, pairs)
        if texts:
            row = row[:2] + (f"{old.name} ({texts} text cells changed)",) + row[3:]
        c.files_changed += bool(row[4]) or bool(texts)
        if kind == "metric check":
            largest = max((drift(a, b) for _, a, b in pairs), default=0.0)
            c.metric_check_drift = max(c.metric_check_drift or 0.0, largest)
        c.rows.append(row)


def compare_folders(committed: Path, fresh: Path, only: str | None = None, variants=None) -> Comparison:
    """Compare every notebook/variant present in both results folders (``only``: one notebook; ``variants``: only
    these variant names)."""
    committed, fresh = Path(committed), Path(fresh)
    c = Comparison()
    keep = lambda v: (not only or v.split("/")[0] == only) and (not variants or v.split("/")[1] in variants)
    a, b = {v for v in _variants(committed) if keep(v)}, {v for v in _variants(fresh) if keep(v)}
    for v in sorted(a - b):
        c.notes.append(f"{v}: committed, not in the fresh results (not reproduced: compared with nothing)")
    for v in sorted(b - a):
        c.notes.append(f"{v}: in the fresh results only (nothing committed to compare with)")
    for v in sorted(a & b):
        old_dir, new_dir = committed / v, fresh / v
        if (old_dir / "metrics.json").is_file():
            if not (new_dir / "metrics.json").is_file():
                c.failures.append(f"{v}/metrics.json is missing from the fresh results")
                c.rows.append(("verdicts", v, "metrics.json", "-", "-", "-", "MISSING from the fresh results"))
            else:
                _compare_metrics(c, v, json.loads((old_dir / "metrics.json").read_text()),
                                 json.loads((new_dir / "metrics.json").read_text()))
        _compare_csvs(c, v, old_dir, new_dir)
    if not a & b:
        c.failures.append(f"no notebook/variant is in both {committed} and {fresh}: nothing was compared")
    return c


def committed_results(root: Path, ref: str, dest: Path) -> Path:
    """Extract ``ref:results/`` of the git repository at ``root`` into ``dest``; returns dest/results."""
    try:
        proc = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", ref, "results"],
                              capture_output=True, check=False)
    except FileNotFoundError:
        raise ValueError("--compare needs git to read the committed results; give --against FOLDER") from None
    if proc.returncode != 0:
        msg = " ".join(proc.stderr.decode(errors="replace").split())
        raise ValueError(f"--against {ref}: git cannot read {ref}:results/ in {root} ({msg}); give a commit or a "
                         f"results folder")
    dest.mkdir(parents=True, exist_ok=True)
    tar = dest / "results.tar"
    tar.write_bytes(proc.stdout)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return dest / "results"


def table(c: Comparison) -> str:
    """The comparison as one markdown table, its notes and a summary line."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(str(x).replace("|", "/") for x in r) + " |" for r in c.rows]
    lines += [""] + [f"note: {n}" for n in c.notes]
    lines.append(summary(c))
    return "\n".join(lines)


def summary(c: Comparison) -> str:
    check = ("no metric check compared" if c.metric_check_drift is None
             else f"metric check: largest relative drift {_fmt(c.metric_check_drift)}")
    state = "OK: every verdict held" if c.ok else f"FAILED ({len(c.failures)}): " + "; ".join(c.failures)
    return (f"{c.verdicts_changed} of {c.verdicts} verdicts changed; {c.files_changed} of {c.files} CSV files differ; "
            f"{check}. {state}")


def compare_command(fresh: str | None, against: str | None, only=None, variants=None, root=None) -> int:
    """``gclib reproduce --compare [FRESH] [--against REF_OR_FOLDER]``: print the table; 0 when no verdict changed and
    every committed file could be compared, else 1. FRESH defaults to the working tree's results/ (after ``make
    reproduce``); the committed side to git's HEAD:results/."""
    from .report import project_root
    root = project_root(root)
    fresh_dir = Path(fresh) if fresh else root / "results"
    if not fresh_dir.is_dir():
        raise FileNotFoundError(f"--compare {fresh_dir}: no such results folder")
    with tempfile.TemporaryDirectory() as tmp:
        if against and Path(against).is_dir():
            committed, name = Path(against), against
        else:
            committed, name = committed_results(root, against or "HEAD", Path(tmp)), f"{against or 'HEAD'}:results/"
        if committed.resolve() == fresh_dir.resolve():
            raise ValueError(f"--compare {fresh_dir}: the fresh and the committed results are the same folder")
        print(f"fresh results: {fresh_dir}\ncommitted results: {name}\n")
        c = compare_folders(committed, fresh_dir, only, variants)
        print(table(c))
    return 0 if c.ok else 1
