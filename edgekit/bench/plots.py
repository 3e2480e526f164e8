"""The report's figures as base64 PNGs: the size / quality / speed Pareto view and per-level bars.

Drawn with matplotlib's Agg backend (no display needed); each figure labels its axes with units.
"""

from __future__ import annotations

import base64
import io
from typing import Any

MiB = 2**20


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _kl(r: dict[str, Any]) -> float | None:
    kl = (r.get("quality") or {}).get("vs_fp", {}).get("mean_kl")
    return None if kl is None else max(kl, 1e-7)  # log axis: an exact match is drawn at 1e-7


def pareto_plot(measured: list[dict[str, Any]], recommended: str | None) -> str | None:
    """File size vs mean KL (log), coloured by decode tokens/s; the frontier dashed, the pick ringed."""
    points = [(r["file_size_bytes"] / MiB, _kl(r), r["decode_tokens_per_s"]["median"], r["quant"]) for r in measured]
    points = sorted(p for p in points if p[1] is not None)
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=100)
    frontier, best = [], float("inf")
    for size, kl, _, _ in points:  # smallest file first: a point is on the frontier if no smaller file beats it
        if kl < best:
            frontier.append((size, kl))
            best = kl
    ax.plot(*zip(*frontier, strict=True), ls="--", color="#888", lw=1, label="Pareto frontier", zorder=1)
    sc = ax.scatter(
        [p[0] for p in points],
        [p[1] for p in points],
        c=[p[2] for p in points],
        cmap="viridis",
        s=110,
        edgecolors="black",
        zorder=2,
    )
    for size, kl, _, name in points:
        ax.annotate(name, (size, kl), textcoords="offset points", xytext=(8, 6), fontsize=10)
        if name == recommended:
            ax.scatter([size], [kl], s=420, facecolors="none", edgecolors="#2e8b57", linewidths=2.5, zorder=3)
    ax.set(xlabel="file size (MiB)", ylabel="mean KL vs fp model (nats/token, log scale)", yscale="log")
    ax.set_title("Size vs quality loss; colour = decode tokens/s (host)", fontsize=11)
    ax.margins(x=0.18, y=0.25)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper right", fontsize=9)
    fig.colorbar(sc, ax=ax, label="decode tokens/s (median)")
    image = _png(fig)
    plt.close(fig)
    return image


def level_bars(measured: list[dict[str, Any]], budget_mib: float | None) -> str | None:
    """Per level: decode tokens/s with its p10–p90 spread, peak RSS, and mean KL vs the fp model."""
    if not measured:
        return None
    plt = _pyplot()
    names = [r["quant"] for r in measured]
    decode = [r["decode_tokens_per_s"] for r in measured]
    panels = 3 if any(_kl(r) is not None for r in measured) else 2
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.4), dpi=100)
    axes[0].bar(
        names,
        [d["median"] for d in decode],
        color="#3b7dd8",
        yerr=[[d["median"] - d["p10"] for d in decode], [d["p90"] - d["median"] for d in decode]],
        capsize=4,
    )
    axes[0].set(title="decode (median, p10–p90)", ylabel="tokens/s")
    axes[1].bar(names, [r["peak_rss_bytes"] / MiB for r in measured], color="#e0823d")
    title = "peak RSS" + (f" (budget {budget_mib:,.0f} MiB)" if budget_mib else "")
    axes[1].set(title=title, ylabel="MiB")
    if panels == 3:
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

        axes[2].bar(names, [_kl(r) or 0 for r in measured], color="#7a5cb8")
        axes[2].set(title="quality loss", ylabel="mean KL vs fp (nats/token)", yscale="log")
        axes[2].yaxis.set_major_locator(LogLocator(subs=(1.0, 3.0)))  # labels at 1 and 3 of each decade
        axes[2].yaxis.set_major_formatter(FormatStrFormatter("%.0e"))
        axes[2].yaxis.set_minor_formatter(NullFormatter())
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=9)
    fig.tight_layout()
    image = _png(fig)
    plt.close(fig)
    return image
