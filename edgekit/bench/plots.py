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
    """File size vs mean KL (log), coloured by the target's predicted decode tokens/s (the host's when there is
    no target); the frontier dashed, the pick ringed."""
    on_target = all(r.get("predicted_decode_tokens_per_s") for r in measured)

    def speed(r: dict[str, Any]) -> float:
        return r["predicted_decode_tokens_per_s"] if on_target else r["decode_tokens_per_s"]["median"]

    points = [(r["file_size_bytes"] / MiB, _kl(r), speed(r), r["quant"]) for r in measured]
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
    where = "target, predicted" if on_target else "this host, measured"
    ax.set_title(f"Size vs quality loss; colour = decode tokens/s ({where})", fontsize=11)
    ax.margins(x=0.18, y=0.25)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper right", fontsize=9)
    fig.colorbar(sc, ax=ax, label=f"decode tokens/s ({where})")
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
    axes[0].set(title="decode on this host (median, p10–p90)", ylabel="tokens/s")
    axes[1].bar(names, [r["peak_rss_bytes"] / MiB for r in measured], color="#e0823d")
    if budget_mib:
        axes[1].axhline(budget_mib, color="#c0392b", lw=1.5, label=f"budget {budget_mib:,.0f} MiB")
        axes[1].set_yscale("log")  # a 100 MiB peak and a 5,000 MiB budget on one readable axis
        axes[1].legend(fontsize=8)
    axes[1].set(title="peak RSS (this host)", ylabel="MiB")
    if panels == 3:
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

        kls = [_kl(r) or 0 for r in measured]
        axes[2].bar(names, kls, color="#7a5cb8")
        axes[2].set(title="quality loss", ylabel="mean KL vs fp (nats/token)", yscale="log")
        axes[2].set_ylim(_log_floor(kls), max(kls) * 3)  # every bar starts below the axis bottom: none is cut
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


def _log_floor(values: list[float]) -> float:
    """A log-axis bottom a decade under the smallest positive value, so every bar and point shows."""
    import math

    positive = [v for v in values if v and v > 0]
    return 10 ** (math.floor(math.log10(min(positive))) - 1) if positive else 1e-6


def tradeoff_plot(points: list[dict[str, Any]], budget_mib: float, floor: float, target: str) -> str | None:
    """Two panels for the build report, all target figures *predicted* (calibrated), none host-measured.

    Left: memory needed on the target (weights + KV at its context + runtime) vs mean KL to the fp model
    (log), colour = predicted decode tokens/s; the Pareto frontier dashed, the memory budget a red line,
    the recommended level ringed, levels under the speed floor drawn hollow. Right: predicted decode
    tokens/s per level with its calibrated range, and the speed floor.
    ``points``: dicts with level, memory_mib, kl, speed, low, high, recommended.
    """
    if not points:
        return None
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100, gridspec_kw={"width_ratios": [1.35, 1]})
    kls = [p["kl"] for p in points if p["kl"] is not None]
    if kls:
        _quality_panel(ax, plt, points, kls, budget_mib, floor, target)
        speeds = [p["speed"] for p in points]
        norm = plt.Normalize(min([*speeds, floor]), max([*speeds, floor]))
        sm = plt.cm.ScalarMappable(norm=norm, cmap="viridis")
        fig.colorbar(sm, ax=ax, label=f"decode on {target}, predicted (tok/s)")
    else:  # no quality was measured: spread the levels by their predicted speed instead
        _speed_panel(ax, points, budget_mib, floor, target)
    names = [p["level"] for p in points]
    mids = [p["speed"] for p in points]
    err = [
        [m - p["low"] for m, p in zip(mids, points, strict=True)],
        [p["high"] - m for m, p in zip(mids, points, strict=True)],
    ]
    colours = ["#3b7dd8" if m >= floor else "#c0392b" for m in mids]
    bx.barh(names, mids, xerr=err, color=colours, capsize=4)
    bx.axvline(floor, color="#c0392b", ls="--", lw=1.5, label=f"speed floor {floor:g} tok/s")
    bx.set_xlim(0, max([*(p["high"] for p in points), floor]) * 1.15)
    bx.invert_yaxis()
    bx.set(xlabel="tokens/s (bar: calibrated figure; whisker: range)")
    bx.set_title(f"decode on {target}, predicted", fontsize=10)
    bx.legend(loc="lower right", fontsize=8)
    bx.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    image = _png(fig)
    plt.close(fig)
    return image


def _label(ax, points_xy: list[tuple[float, float, str]], alternate: bool = True) -> None:
    """Level names beside their points; ``alternate``: above and below in turn so close neighbours do not overlap."""
    for i, (x, y, name) in enumerate(sorted(points_xy)):
        dy = (8 if i % 2 == 0 else -14) if alternate else -4
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(12, dy), fontsize=9)


def _quality_panel(ax, plt, points, kls, budget_mib: float, floor: float, target: str) -> None:
    bottom = _log_floor(kls)
    shown = [{**p, "y": max(p["kl"], bottom) if p["kl"] is not None else bottom} for p in points]
    shown.sort(key=lambda p: p["memory_mib"])
    frontier, best = [], float("inf")
    for p in shown:  # smallest first: on the frontier if no smaller level loses less
        if p["y"] < best:
            frontier.append((p["memory_mib"], p["y"]))
            best = p["y"]
    if len(frontier) > 1:
        ax.plot(*zip(*frontier, strict=True), ls="--", color="#888", lw=1, label="Pareto frontier", zorder=1)
    speeds = [p["speed"] for p in shown]
    norm = plt.Normalize(min([*speeds, floor]), max([*speeds, floor]))
    for p in shown:
        ok = p["speed"] >= floor
        colour = plt.cm.viridis(norm(p["speed"]))
        ax.scatter(
            [p["memory_mib"]],
            [p["y"]],
            s=120,
            c=[colour] if ok else "none",
            edgecolors=colour if not ok else "black",
            linewidths=2 if not ok else 1,
            zorder=3,
        )
        if p["recommended"]:
            ax.scatter([p["memory_mib"]], [p["y"]], s=480, facecolors="none", edgecolors="#2e8b57", linewidths=2.5)
    _label(ax, [(p["memory_mib"], p["y"], p["level"]) for p in shown])
    _memory_axis(ax, shown, budget_mib, target)
    ax.set_yscale("log")
    ax.set_ylim(bottom / 2, max(p["y"] for p in shown) * 5)
    ax.set(ylabel="mean KL vs fp model (nats/token, log)")
    ax.set_title("size × quality, colour = predicted decode tok/s", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)


def _speed_panel(ax, points, budget_mib: float, floor: float, target: str) -> None:
    for p in points:
        ax.errorbar(
            [p["memory_mib"]],
            [p["speed"]],
            yerr=[[p["speed"] - p["low"]], [p["high"] - p["speed"]]],
            fmt="o",
            color="#3b7dd8" if p["speed"] >= floor else "#c0392b",
            capsize=4,
        )
        if p["recommended"]:
            ax.scatter([p["memory_mib"]], [p["speed"]], s=420, facecolors="none", edgecolors="#2e8b57", linewidths=2.5)
    _label(ax, [(p["memory_mib"], p["speed"], p["level"]) for p in points], alternate=False)
    ax.axhline(floor, color="#c0392b", ls="--", lw=1.2, label=f"speed floor {floor:g} tok/s")
    _memory_axis(ax, points, budget_mib, target)
    ax.set_ylim(0, max(p["high"] for p in points) * 1.2)
    ax.set(ylabel=f"decode on {target}, predicted (tok/s)")
    ax.set_title("size × predicted speed (no quality was measured)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)


def _memory_axis(ax, points, budget_mib: float, target: str) -> None:
    """Log memory axis (an 80 MiB model and a 5,000 MiB budget both readable) with the budget line."""
    ax.axvline(budget_mib, color="#c0392b", lw=1.5, label=f"memory budget {budget_mib:,.0f} MiB")
    ax.set_xscale("log")
    largest = max(p["memory_mib"] for p in points)
    ax.set_xlim(min(p["memory_mib"] for p in points) / 1.6, max(budget_mib, largest) * 1.6)
    ax.set(xlabel=f"memory needed on {target} (MiB, log)")
    ax.grid(alpha=0.3, which="both")


def stage_plot(stages: list[dict[str, Any]]) -> str | None:
    """Held-out perplexity of each pipeline stage's model (linear axis from 0), the teacher's as a line."""
    rows = [s for s in stages if s.get("perplexity") is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    names = [s["name"] for s in rows]
    values = [s["perplexity"] for s in rows]
    ax.bar(names, values, color=["#7a5cb8" if s.get("kind") == "stage" else "#3b7dd8" for s in rows])
    from edgekit.predict import sig3

    ax.axhline(values[0], color="#444", ls="--", lw=1, label=f"teacher {sig3(values[0])}")
    for i, v in enumerate(values):
        ax.annotate(sig3(v), (i, v), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_ylim(0, max(values) * 1.3)
    ax.set(ylabel="perplexity on held-out text")
    ax.set_title("quality along the pipeline (lower is better)", fontsize=10)
    ax.tick_params(axis="x", labelsize=8, rotation=20)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    image = _png(fig)
    plt.close(fig)
    return image


def host_plot(levels: list[str], decode: list[float | None], rss_mib: list[float | None], host: str) -> str | None:
    """Decode tokens/s and peak RSS measured on the build host: a different machine from the target."""
    if not any(decode):
        return None
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.4, 2.8), dpi=100)
    ax.bar(levels, [d or 0 for d in decode], color="#999")
    ax.set(ylabel="tokens/s", title="decode, measured on this host")
    bx.bar(levels, [r or 0 for r in rss_mib], color="#bbb")
    bx.set(ylabel="MiB", title="peak RSS, measured on this host")
    for a in (ax, bx):
        a.set_ylim(0, None)
        a.grid(axis="y", alpha=0.3)
        a.tick_params(labelsize=8)
        a.title.set_fontsize(10)
    fig.suptitle(f"build host ({host}), not the target", fontsize=9, color="#555")
    fig.tight_layout()
    image = _png(fig)
    plt.close(fig)
    return image
