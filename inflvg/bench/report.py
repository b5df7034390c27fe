"""Markdown tables and PNG plots of a benchmark result (the JSON written by ``python -m inflvg.bench``)."""

from __future__ import annotations

from pathlib import Path

from .quality import METRICS, VISITS

LABELS = {"returns": "character on returns", "returns_among4": "on returns, among 4"}
"""Column headers of the metrics whose key is not their name."""
QUALITY_HEAD = " | ".join(LABELS.get(m, m) for m in METRICS)


def _fmt(mean: float, ci: list[float]) -> str:
    return f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown(result: dict) -> str:
    strategies = result["strategies"]
    mults = result["config"]["length_multiples"]
    head = f"| strategy | {QUALITY_HEAD} | " + " | ".join(
        f"ms/frame {m}x" for m in mults
    ) + f" | {max(mults)}x/1x | ctx tokens (max) | KV bytes / transition |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, s in strategies.items():
        t = s.get("timing", {})
        ms = [f"{t['ms_per_frame'][str(m)]:.1f}" if t else "-" for m in mults]
        kv = t.get("kv_bytes_per_transition", {}).get(str(max(mults))) if t else None
        ctx = t["context_tokens"][str(max(mults))] if t else "-"
        ratio = f"{t['ms_ratio_longest_to_1x']:.2f}" if t else "-"
        quality = [_fmt(s[m], s["ci95"][m]) for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(quality + ms + [ratio, str(ctx), f"{kv:,.0f}" if kv is not None else "-"]) + " |")
    lines.append("")
    lines.append("Paired differences over the same videos (mean [95% CI]):")
    lines.append("")
    lines.append("| pair | identity | combined |")
    lines.append("|---|---|---|")
    for pair, d in result.get("paired", {}).items():
        lines.append(f"| {pair} | {_fmt(d['identity']['mean'], d['identity']['ci95'])} | {_fmt(d['combined']['mean'], d['combined']['ci95'])} |")
    lines += by_length_markdown(result) + visits_markdown(result)
    for key, kind in (("gap_closed", "heuristic"), ("gap_closed_budgeted", "fixed-budget heuristic")):
        gap = result.get(key)
        if gap:
            lines += ["", (f"Learned policy closes {gap['fraction']:.0%} [{gap['ci95'][0]:.0%}, {gap['ci95'][1]:.0%}] of the {gap['metric']} "
                           f"gap between the best {kind} ({gap['best_heuristic']}) and oracle-K.")]  # fmt: skip
    return "\n".join(lines) + "\n"


def _mean(values: list) -> float:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else float("nan")


HEAD = (f"| length | strategy | videos | {QUALITY_HEAD} "
        "| scene combined, first horizon | last horizon | identity on returns, scenes 9+ / 3-8 | oracle - strategy, combined |")
COLUMNS = HEAD.count("|") - 1


def by_length_markdown(result: dict) -> list[str]:
    """The quality table per quality length (``strategies.NAME.by_length``), with the drift of
    combined from the video's first horizon to its last, the no-drift ratio and oracle's paired combined advantage."""
    config = result["config"]
    lines = ["", "Quality by video length (x training horizon; mean [95% CI]). Scene combined: the drift curve's mean over the first",
             "and the last horizon's scenes (each scene's combined is the mean of what it has: identity only on returns).", "",
             HEAD, "|" + "---|" * COLUMNS]  # fmt: skip
    for L in config.get("quality_lengths", []):
        horizon = config["scenes_by_length"][str(L)] // L
        for name, s in result["strategies"].items():
            b = s.get("by_length", {}).get(str(L))
            if b is None:
                lines.append(f"| {L}x | {name} | left out (cost) |" + " - |" * (COLUMNS - 3))
                continue
            curve = b["drift"]["combined"]
            pair = result.get("paired_by_length", {}).get(str(L), {}).get(f"oracle-{name}")
            gap = _fmt(pair["combined"]["mean"], pair["combined"]["ci95"]) if pair else "-"
            quality = [_fmt(b[m], b["ci95"][m]) for m in METRICS]
            drift = f"{_mean(curve[:horizon]):.3f} | {_mean(curve[-horizon:]):.3f}"
            check = b.get("identity_drift")
            ratio = _fmt(check["ratio"], check["ratio_ci95"]) if check and check["ratio"] is not None else "-"
            lines.append(f"| {L}x | {name} | {b['videos']} | " + " | ".join(quality) + f" | {drift} | {ratio} | {gap} |")
    return lines


def visits_markdown(result: dict) -> list[str]:
    """Right character on returns by visit (``returns_by_visit``), per quality length and strategy."""
    names = [name for name, _, _ in VISITS]
    lines = ["", "Right character on returns by visit (the subject's first return, second, third and later; pooled mean [95% CI], scenes):",
             "", "| length | strategy | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]  # fmt: skip
    for L in result["config"].get("quality_lengths", []):
        for name, s in result["strategies"].items():
            visits = s.get("by_length", {}).get(str(L), {}).get("returns_by_visit")
            if visits:
                cells = [f"{_fmt(v['mean'], v['ci95'])}, {v['scenes']}" if v else "-" for v in (visits[n] for n in names)]
                lines.append(f"| {L}x | {name} | " + " | ".join(cells) + " |")
    return lines


def plot_drift(result: dict, path: Path) -> None:
    """Drift curves: combined (with its 95% band) and identity on returning scenes, against scene
    index, per strategy; one column of panels per quality length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    lengths = result["config"].get("quality_lengths", [])
    fig, axes = plt.subplots(2, len(lengths), figsize=(5.5 * len(lengths), 7), squeeze=False, sharex="col")
    for col, L in enumerate(lengths):
        top, bottom = axes[0][col], axes[1][col]
        for i, (name, s) in enumerate(result["strategies"].items()):
            b = s.get("by_length", {}).get(str(L))
            if b is None:
                continue
            colour = f"C{i}"
            curve = np.array(b["drift"]["combined"], float)
            band = np.array(b["drift"]["ci95"]["combined"], float)
            x = np.arange(len(curve))
            top.plot(x, curve, color=colour, label=name)
            top.fill_between(x, band[:, 0], band[:, 1], color=colour, alpha=0.15)
            ident = np.array(b["drift"]["identity"], float)
            keep = ~np.isnan(ident)
            bottom.plot(x[keep], ident[keep], color=colour, marker=".", label=name)
        for ax in (top, bottom):
            horizon = result["config"]["scenes_by_length"][str(L)] // L
            for h in range(horizon, result["config"]["scenes_by_length"][str(L)], horizon):
                ax.axvline(h - 0.5, color="grey", lw=0.5, ls=":")
        top.set(ylim=(0, 1), title=f"{L}x: combined by scene", xlabel="scene index")
        bottom.set(ylim=(0, 1), title=f"{L}x: identity on returning scenes", xlabel="scene index")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    mults = result["config"]["length_multiples"]
    names = list(result["strategies"])
    for name in names:
        t = result["strategies"][name].get("timing")
        if t:
            ax1.plot(mults, [t["ms_per_frame"][str(m)] for m in mults], marker="o", label=name)
    ax1.set(xscale="log", xlabel="video length (x training horizon)", ylabel="ms per frame", title="cost per frame")
    ax1.set_xticks(mults, [str(m) for m in mults])
    ax1.legend()
    metrics = ("alignment", "identity", "artifacts", "combined")
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        s = result["strategies"][name]
        ax2.bar([j + i * width for j in range(len(metrics))], [s[m] for m in metrics], width, label=name)
    ax2.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics)
    ax2.set(ylim=(0, 1), title=f"quality on {result['config']['prompts']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
