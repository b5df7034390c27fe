"""Markdown table and PNG plot of a benchmark result (the JSON written by ``python -m inflvg.bench``)."""

from __future__ import annotations

from pathlib import Path

from .quality import METRICS


def _fmt(mean: float, ci: list[float]) -> str:
    return f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown(result: dict) -> str:
    strategies = result["strategies"]
    mults = result["config"]["length_multiples"]
    head = "| strategy | alignment | identity | artifacts | combined | character | character on returns | " + " | ".join(
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
    for key, kind in (("gap_closed", "heuristic"), ("gap_closed_budgeted", "fixed-budget heuristic")):
        gap = result.get(key)
        if gap:
            lines += ["", (f"Learned policy closes {gap['fraction']:.0%} [{gap['ci95'][0]:.0%}, {gap['ci95'][1]:.0%}] of the {gap['metric']} "
                           f"gap between the best {kind} ({gap['best_heuristic']}) and oracle-K.")]  # fmt: skip
    return "\n".join(lines) + "\n"


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
