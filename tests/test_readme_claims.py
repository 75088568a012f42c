"""Every number README.md gives for the central question stands in a committed row.

The section "What the CPU runs show" speaks for the digits profiles' rows (results/fid_curves/*/metrics.json).
Each paired difference it prints as ``mean [lo, hi]`` must be a row's difference (its ``diff``, or a difference its
``measured`` text states, such as a row's value under an earlier scoring) at the precision printed; a verdict word
that follows it in the same clause must be that row's verdict (or its family-wise one); each ``p = x`` and
``adjusted p x`` must be a row's p-value. A sentence that over-states its row, or a number left behind when the
results change, fails here."""
import json
import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "### What the CPU runs show"

NUM = r"[-+−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
INTERVAL = re.compile(rf"({NUM}) \[({NUM}), ({NUM})\]")
VERDICT = re.compile(r"\b(holds|refuted|inconclusive)\b")
P_VALUE = re.compile(rf"\b(?:adjusted p|p =) ({NUM})")
ENDS_AT = re.compile(rf"ends at ({NUM}) against IC's ({NUM})(?: and OT's ({NUM}))?")


def central_section(readme: str) -> str:
    start = readme.index(SECTION)
    end = readme.find("\n### ", start + len(SECTION))
    return " ".join(readme[start:end if end > 0 else None].split())   # a sentence may break across lines


def _value(text: str) -> float:
    return float(text.replace("−", "-"))


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def _agrees(printed: str, value: float) -> bool:
    """The printed number is value rounded to the decimals printed (a %.3g number like -2.39e+03 printed as -2390
    agrees to its own precision too)."""
    half = 0.5 * 10 ** -_decimals(printed)
    return math.isclose(_value(printed), value, abs_tol=half * 1.0001) or (
        value != 0 and math.isclose(_value(printed), float(f"{value:.3g}"), rel_tol=1e-9))


def committed_metrics(root: Path = ROOT) -> dict[str, dict]:
    """Each committed fid_curves profile's metrics.json, by profile name."""
    return {f.parent.name: json.loads(f.read_text())
            for f in sorted((root / "results" / "fid_curves").glob("*/metrics.json"))}


def committed_rows(metrics: dict[str, dict]) -> list[dict]:
    """Every claim row of the committed fid_curves profiles, each with the (mean, lo, hi) triples it states."""
    rows = []
    for profile, data in metrics.items():
        for c in data.get("claims", []):
            own = {c.get("verdict"), c.get("verdict_holm")}
            triples = [(c["diff"]["mean"], c["diff"]["lo"], c["diff"]["hi"], own)] if c.get("diff") else []
            for m in INTERVAL.finditer(measured := c.get("measured", "")):
                # a difference under another scoring carries the verdict its text gives it
                v = VERDICT.search(measured[m.end():].split(";", 1)[0])
                triples.append((*(_value(x) for x in m.groups()), {v.group(1)} if v else own))
            rows.append({**c, "profile": profile, "triples": triples})
    return rows


def committed_finals(metrics: dict[str, dict]) -> list[dict]:
    """Each committed fid_curves profile's mean final value per flow label."""
    return [{k: v["mean"] for k, v in data.get("final", {}).items()} for data in metrics.values()]


def unmatched_finals(section: str, finals: list[dict]) -> list[str]:
    """"GC ends at a against IC's b (and OT's c)": one profile's mean finals, GC's under some GC label."""
    problems = []
    for m in ENDS_AT.finditer(section):
        gc, ic, ot = m.groups()
        if not any(_agrees(ic, f.get("IC", math.nan)) and (ot is None or _agrees(ot, f.get("OT", math.nan)))
                   and any(_agrees(gc, v) for k, v in f.items() if k.startswith("GC")) for f in finals):
            problems.append(f"no profile has {m.group(0)}")
    return problems


def unmatched(section: str, rows: list[dict]) -> list[str]:
    """What in the section no committed row says: one line per interval, verdict or p-value without its row."""
    problems = []
    found = list(INTERVAL.finditer(section))
    for i, m in enumerate(found):
        mean, lo, hi = m.groups()
        hits = [t for r in rows for t in r["triples"]
                if _agrees(mean, t[0]) and _agrees(lo, t[1]) and _agrees(hi, t[2])]
        if not hits:
            problems.append(f"no row has {m.group(0)}")
            continue
        # the verdict word of the same clause: after this interval, before the next one and the sentence's end
        stop = found[i + 1].start() if i + 1 < len(found) else len(section)
        clause = re.split(r"[.;]\s", section[m.end():stop], maxsplit=1)[0]
        v = VERDICT.search(clause.replace("*", ""))
        if v and not any(v.group(1) in t[3] for t in hits):
            problems.append(f"{m.group(0)} is called {v.group(1)}; its row says "
                            f"{sorted(set().union(*(t[3] for t in hits)) - {None})}")
    pvalues = [r[k] for r in rows for k in ("p", "p_holm") if isinstance(r.get(k), (int, float))]
    for m in P_VALUE.finditer(section):
        if not any(_agrees(m.group(1), p) for p in pvalues):
            problems.append(f"no row has {m.group(0)}")
    return problems


def test_every_interval_verdict_and_p_value_of_the_central_question_stands_in_a_row():
    section = central_section((ROOT / "README.md").read_text())
    metrics = committed_metrics()
    rows = committed_rows(metrics)
    assert len(INTERVAL.findall(section)) >= 10 and len(P_VALUE.findall(section)) >= 2 and rows
    assert unmatched(section, rows) == []
    assert len(ENDS_AT.findall(section)) >= 2 and unmatched_finals(section, committed_finals(metrics)) == []


def test_the_check_fails_on_a_number_or_verdict_the_rows_do_not_hold():
    section = central_section((ROOT / "README.md").read_text())
    metrics = committed_metrics()
    rows = committed_rows(metrics)
    m = INTERVAL.search(section)
    mean, lo, hi = m.groups()
    # a changed bound
    wrong = section.replace(m.group(0), f"{mean} [{lo}, {_value(hi) + 1:.2f}]", 1)
    assert f"no row has {mean} [{lo}, {_value(hi) + 1:.2f}]" in unmatched(wrong, rows)
    # a verdict the row does not have: every clause's verdict word flipped
    flipped = re.sub(r"\*\*inconclusive\*\*", "**holds**", section)
    assert flipped != section and any("is called holds" in p for p in unmatched(flipped, rows))
    # a p-value that no row has
    assert "no row has p = 0.77" in unmatched(section + " (sign test, p = 0.77)", rows)
    # a profile's final value that is not its own
    m = ENDS_AT.search(section)
    wrong = section.replace(m.group(0), m.group(0).replace(f"IC's {m.group(2)}", f"IC's {_value(m.group(2)) + 1}"))
    assert len(unmatched_finals(wrong, committed_finals(metrics))) == 1
    # results that changed under the text: a row's interval moved
    moved = [{**r, "triples": [(t[0] + 1, t[1] + 1, t[2] + 1, t[3]) for t in r["triples"]]} for r in rows]
    assert len(unmatched(section, moved)) >= len(INTERVAL.findall(section)) - 1


def test_rounding_rule():
    assert _agrees("-1.83", -1.8259) and not _agrees("-1.83", -1.8149)
    assert _agrees("+0.14", 0.1449) and _agrees("-1500", -1.5e3) and _agrees("-2390", -2386.0)
    assert _agrees("-0.0046", -0.00456) and not _agrees("-0.0046", -0.0047)
