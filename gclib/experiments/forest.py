"""The central question in one picture: every paired difference of the pre-registered digits profiles (a forest
plot: one row per comparison x endpoint x profile, its mean and 90% interval), and the table of their primary rows
with the family-wise verdicts. Read from the profiles' committed metrics.json, so ``make reproduce`` redraws it
without training anything."""
from __future__ import annotations

import json
from pathlib import Path

ENDPOINT_TITLES = {"final": "final FD$_{digits}$ (10k samples)", "first": "FD$_{digits}$ at the first evaluation",
                   "mean_log": "mean log FD$_{digits}$ over training", "budget": "change of the final lead, longer "
                   "minus shorter budget (exploratory; below 0: the lead grows)"}
COLOURS = {"holds": "#1b7837", "refuted": "#b2182b", "inconclusive": "#7f7f7f"}


def profile_order(name: str) -> tuple:
    """The replication leads, then cpu_long, then the profiles that lean on cpu_long's seeds."""
    return (0 if "replication" in name else 1, len(name), name)


def digits_profiles(root) -> list[tuple[str, dict]]:
    """(variant, metrics) of every pre-registered digits profile with results under results/fid_curves/."""
    out = []
    for m in (Path(root) / "results" / "fid_curves").glob("*/metrics.json"):
        data = json.loads(m.read_text())
        if data.get("dataset") == "digits" and data.get("preregistration"):
            out.append((m.parent.name, data))
    return sorted(out, key=lambda t: profile_order(t[0]))


def forest_rows(root) -> list[dict]:
    """One dict per plotted row: profile, endpoint, a, b, n, role, mean, lo, hi, verdict, verdict_holm. Rows without
    an interval (a censored sign test) are left out; the README's table names them."""
    rows = []
    for variant, data in digits_profiles(root):
        for c in data.get("claims", []):
            d = c.get("diff")
            if not d or c.get("endpoint") not in ENDPOINT_TITLES:
                continue
            rows.append({"profile": variant, "endpoint": c["endpoint"], "a": c["a"], "b": c["b"], "n": c.get("n"),
                         "role": c.get("role"), "mean": d["mean"], "lo": d["lo"], "hi": d["hi"],
                         "verdict": c["verdict"], "verdict_holm": c.get("verdict_holm", "")})
    return rows


def forest_plot(rows: list[dict], path) -> Path | None:
    """The forest plot of ``rows`` (``forest_rows``): a panel per endpoint (each on its own scale), a row per
    comparison and profile, the mean and its 90% interval. Colour: a primary row's Holm-adjusted verdict, a
    secondary or exploratory row's own (unadjusted) verdict; filled diamonds are primary rows, open circles
    secondary, open squares exploratory. Saved as PNG and PDF. None when there are no rows."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from ..report import save_figure
    if not rows:
        return None
    panels = [e for e in ENDPOINT_TITLES if any(r["endpoint"] == e for r in rows)]
    sizes = [sum(r["endpoint"] == e for r in rows) for e in panels]
    fig = Figure(figsize=(8.5, 1.1 + 0.3 * sum(sizes) + 0.5 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": sizes})[:, 0]
    marker = {"primary": "D", "secondary": "o", "exploratory": "s"}
    for ax, e in zip(axes, panels):
        sel = [r for r in rows if r["endpoint"] == e]
        for y, r in enumerate(reversed(sel)):
            primary = r["role"] == "primary"
            colour = COLOURS.get(r["verdict_holm"] if primary else r["verdict"], "#7f7f7f")
            ax.plot([r["lo"], r["hi"]], [y, y], color=colour, lw=2.2 if primary else 1.2)
            ax.plot([r["mean"]], [y], marker=marker.get(r["role"], "o"), ms=7 if primary else 5, color=colour,
                    mfc=colour if primary else "white")
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_yticks(range(len(sel)))
        ax.set_yticklabels([f"{r['profile']}: {r['a']} $-$ {r['b']} (n={r['n']})" for r in reversed(sel)],
                           fontsize=7.5)
        for lab, r in zip(ax.get_yticklabels(), reversed(sel)):
            lab.set_fontweight("bold" if r["role"] == "primary" else "normal")
        ax.set_ylim(-0.6, len(sel) - 0.4)
        ax.set_title(ENDPOINT_TITLES[e], fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=8)
    handles = [Line2D([], [], color=c, marker="D", lw=2, label=f"{v} (primary: Holm-adjusted)")
               for v, c in COLOURS.items()]
    handles += [Line2D([], [], color="#7f7f7f", marker="o", mfc="white", lw=1, label="secondary (unadjusted)"),
                Line2D([], [], color="#7f7f7f", marker="s", mfc="white", lw=1, label="exploratory (unadjusted)")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7.5, frameon=False)
    fig.suptitle("Digits: paired differences over seeds (a $-$ b; below 0: a is better), 90% t-intervals",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    return save_figure(fig, path)


def central_table(root) -> list[str]:
    """Markdown: the primary rows of every pre-registered digits profile (replication first), each with its own
    and its family-wise verdict, then what each profile's seeds share or had shown before its pre-registration."""
    profiles = digits_profiles(root)
    if not profiles:
        return []
    lines = ["| profile | comparison | endpoint | n | difference [90% interval] | verdict | family-wise (Holm) |",
             "|---|---|---|---|---|---|---|"]
    notes = []
    for variant, data in profiles:
        for c in data.get("claims", []):
            if c.get("role") != "primary":
                continue
            d = c.get("diff") or {}
            iv = f"{d['mean']:.3g} [{d['lo']:.3g}, {d['hi']:.3g}]" if d else c["measured"]
            lines.append(f"| {variant} | {c['a']} - {c['b']} | {c['endpoint']} | {c.get('n', '-')} | {iv} | "
                         f"{c['verdict']} | **{c.get('verdict_holm', 'not computed')}** |")
        pre = data["preregistration"]
        seen = " ".join(str(pre.get("seen_before", "")).split())
        shared = "; ".join(f"runs {', '.join(v)} are {k}'s" for k, v in (pre.get("shared_with") or {}).items())
        notes.append(f"- **{variant}** (pre-registered {pre.get('date')}, seeds {_span(data['seeds'])}): "
                     + (seen or "no seed was run before its pre-registration.") + (f" Shared: {shared}." if shared
                                                                                     else ""))
    return lines + [""] + notes + [""]


def _span(seeds) -> str:
    s = sorted(seeds)
    return f"{s[0]}-{s[-1]}" if s == list(range(s[0], s[-1] + 1)) and len(s) > 1 else ", ".join(map(str, s))


def timing_table(root) -> list[str]:
    """Markdown: for each pre-registered digits profile, where its runs trained and how long a run took (its
    runs.csv: the seconds each run's done.json recorded), so a profile trained on a GPU or a busy CPU is read with
    its cost beside it. Profiles whose runs predate runs.csv say so (their notebook timings are in timings.json)."""
    import pandas as pd
    rows = []
    for variant, data in digits_profiles(root):
        f = Path(root) / "results" / "fid_curves" / variant / "runs.csv"
        if not f.is_file():
            rows.append(f"| {variant} | {data.get('steps')} | not recorded (runs trained before runs.csv existed; "
                        f"see timings.json) | - | - |")
            continue
        t = pd.read_csv(f)
        sec = t.seconds.dropna()
        devices = ", ".join(f"{d} ({n})" for d, n in t.device.value_counts().items())
        rows.append(f"| {variant} | {data.get('steps')} | {devices} | {sec.median():.0f} | "
                    f"{sec.min():.0f}-{sec.max():.0f} |" if len(sec) else f"| {variant} | {data.get('steps')} | "
                    f"{devices} | - | - |")
    return (["| profile | steps | device (runs) | median s per run | range |", "|---|---|---|---|---|"] + rows + [""]
            if rows else [])
