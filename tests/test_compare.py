"""gclib reproduce --compare: a fresh results folder set against the committed one. A flipped verdict, a missing
claim or file and a changed table shape are failures (exit status 1); numbers that moved are a table of drifts."""
import json
import math
import shutil

import pandas as pd
import pytest

from gclib import compare
from gclib.cli import main
from nbhelpers import ROOT

VARIANTS = ("fid_curves/cpu_digits", "toy_flows/cpu")


def _copy(dest, variants=VARIANTS):
    for v in variants:
        src = ROOT / "results" / v
        shutil.copytree(src, dest / v, ignore=shutil.ignore_patterns("*.png", "*.pdf", "*.ipynb"))
    return dest


@pytest.fixture
def folders(tmp_path):
    return _copy(tmp_path / "committed"), _copy(tmp_path / "fresh")


def _edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _scale_csv(path, column, factor, row=None):
    df = pd.read_csv(path)
    rows = slice(None) if row is None else row
    df.loc[rows, column] = df.loc[rows, column] * factor
    df.to_csv(path, index=False)


def test_relative_drift_is_symmetric_and_bounded():
    assert compare.drift(2.0, 2.0) == 0.0 and compare.drift(0.0, 0.0) == 0.0
    assert compare.drift(2.0, 1.0) == compare.drift(1.0, 2.0) == 0.5
    assert compare.drift(1.0, -1.0) == 2.0                     # a sign flip: the largest drift
    assert compare.drift(float("nan"), float("nan")) == 0.0
    assert compare.drift(1.0, float("nan")) == compare.drift(math.inf, 1.0) == 1.0
    assert compare.drift(9.44964834340044, 9.449647887130823) == pytest.approx(4.828e-8, rel=1e-3)


def test_identical_folders_compare_clean(folders):
    c = compare.compare_folders(*folders)
    assert c.ok and c.verdicts == 5 and c.verdicts_changed == 0 and c.files_changed == 0
    assert c.metric_check_drift == 0.0
    assert all(r[4] in (0, "-") for r in c.rows)
    assert compare.summary(c).startswith("0 of 5 verdicts changed; 0 of 5 CSV files differ; metric check: largest "
                                         "relative drift 0")


def test_a_flipped_verdict_fails_and_numeric_drift_is_tabled(folders):
    committed, fresh = folders
    v = fresh / "fid_curves" / "cpu_digits"
    claim = json.loads((v / "metrics.json").read_text())["claims"][1]
    assert claim["verdict"] == "holds"

    def flip(m):
        m["claims"][1]["verdict"] = "inconclusive"
        m["final"]["GC mu=0.5"]["mean"] = 52.24                 # the Intel Xeon's number (committed 50.98)
    _edit_json(v / "metrics.json", flip)
    _scale_csv(v / "final.csv", "mean", 1 + 1e-3, row=0)      # IC's final mean moves by 1e-3 of itself
    _scale_csv(v / "metric_check.csv", "fd_digits", 1 + 5e-8)
    c = compare.compare_folders(committed, fresh)
    assert not c.ok and c.verdicts_changed == 1
    assert c.failures == [f"fid_curves/cpu_digits: {claim['claim']!r} was holds, is inconclusive"]
    rows = {(r[0], r[1], r[2]): r for r in c.rows}
    assert rows[("verdict CHANGED", "fid_curves/cpu_digits", claim["claim"])][6] == "holds -> inconclusive"
    final = rows[("final score", "fid_curves/cpu_digits", "GC mu=0.5")]
    assert final[4] == 1 and float(final[5].split(" / ")[1]) == pytest.approx((52.24 - 50.97980402297757) / 52.24,
                                                                             rel=1e-2)
    csv_row = rows[("numbers", "fid_curves/cpu_digits", "final.csv")]
    assert csv_row[3] == 6 and csv_row[4] == 1 and csv_row[5].endswith("/ 0.001")
    assert csv_row[6].startswith("row 1 (IC) / mean: 51.83895116664686 -> 51.8907")
    check = rows[("metric check", "fid_curves/cpu_digits", "metric_check.csv")]
    assert check[4] == 5 and c.metric_check_drift == pytest.approx(5e-8, rel=1e-3)
    assert rows[("numbers", "toy_flows/cpu", "alignment.csv")][4] == 0
    text = compare.table(c)
    assert text.splitlines()[0] == "| " + " | ".join(compare.HEADER) + " |"
    assert "| verdict CHANGED | fid_curves/cpu_digits |" in text
    assert text.splitlines()[-1].startswith("1 of 5 verdicts changed; 2 of 5 CSV files differ; metric check: largest "
                                            "relative drift 5e-08. FAILED (1)")
    # the same through the command line: the table on stdout, exit status 1
    assert main(["reproduce", "--compare", str(fresh), "--against", str(committed)]) == 1
    assert main(["reproduce", "--compare", str(fresh), "--against", str(committed), "--only", "toy_flows"]) == 0


def test_changed_text_and_boolean_cells_are_counted(folders):
    committed, fresh = folders
    for folder in folders:
        df = pd.read_csv(folder / "fid_curves" / "cpu_digits" / "final.csv")
        df["above"] = df["mean"] > 51.0
        df.to_csv(folder / "fid_curves" / "cpu_digits" / "final.csv", index=False)
    df = pd.read_csv(fresh / "fid_curves" / "cpu_digits" / "final.csv")
    df.loc[0, "above"], df.loc[1, "label"] = False, "GC"
    df.to_csv(fresh / "fid_curves" / "cpu_digits" / "final.csv", index=False)
    c = compare.compare_folders(committed, fresh)
    row = next(r for r in c.rows if r[2].startswith("final.csv"))
    assert row[2] == "final.csv (2 text cells changed)" and row[4] == 0 and c.files_changed == 1


def test_missing_claims_files_and_changed_shapes_fail(folders):
    committed, fresh = folders
    v = fresh / "fid_curves" / "cpu_digits"
    _edit_json(v / "metrics.json", lambda m: m["claims"].pop(0))
    (v / "final.csv").unlink()
    pd.read_csv(v / "curves.csv").iloc[:-1].to_csv(v / "curves.csv", index=False)
    c = compare.compare_folders(committed, fresh)
    assert len(c.failures) == 3 and c.verdicts_changed == 1
    assert "is missing from the fresh results" in c.failures[0]
    assert c.failures[1] == "fid_curves/cpu_digits/curves.csv: rows changed: 60 -> 59"
    assert c.failures[2] == "fid_curves/cpu_digits/final.csv is missing from the fresh results"


def test_variants_on_one_side_are_named_not_compared(tmp_path):
    committed = _copy(tmp_path / "committed")
    fresh = _copy(tmp_path / "fresh", VARIANTS[1:])
    c = compare.compare_folders(committed, fresh)
    assert c.ok and c.notes == ["fid_curves/cpu_digits: committed, not in the fresh results (not reproduced: "
                                "compared with nothing)"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not compare.compare_folders(committed, empty).ok     # nothing compared is not a pass


def test_the_committed_side_is_read_from_git(tmp_path, capsys):
    fresh = _copy(tmp_path / "fresh", VARIANTS[:1])
    assert compare.compare_command(str(fresh), None, root=ROOT) == 0   # HEAD:results/ (the committed files)
    out = capsys.readouterr().out
    assert "committed results: HEAD:results/" in out and "0 of 2 verdicts changed" in out
    with pytest.raises(ValueError, match="git cannot read no-such-commit:results/"):
        compare.compare_command(str(fresh), "no-such-commit", root=ROOT)


@pytest.mark.parametrize("argv,pattern", [
    (["reproduce", "--against", "HEAD"], "--against names the committed results of --compare: add --compare"),
    (["reproduce", "--compare", "--long"], "--compare trains nothing: drop --long"),
    (["reproduce", "--compare", "/no/such/folder"], "--compare /no/such/folder: no such results folder"),
    (["reproduce", "--compare", str(ROOT / "results"), "--against", str(ROOT / "results")],
     f"--compare {ROOT / 'results'}: the fresh and the committed results are the same folder"),
])
def test_bad_compare_options_are_one_line(argv, pattern, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gclib reproduce: error: {pattern}"
