"""The benchmark report: Markdown for terminals and diffs, a self-contained HTML page to look at.

The HTML carries its plots inline (base64 PNG), so it can be mailed or opened from a bundle with no
other files: size vs KL coloured by decode speed (the Pareto view), and per-level bars.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from edgekit.fileio import write_text_atomic


def _rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in results["results"]:
        if r.get("error"):
            rows.append({"quant": r.get("quant", Path(r["artifact"]).name), "error": r["error"]})
            continue
        q = r.get("quality", {})
        rows.append(
            {
                "quant": r["quant"],
                "artifact": Path(r["artifact"]).name,
                "mib": r["file_size_bytes"] / 2**20,
                "rss": r["peak_rss_bytes"] / 2**20,
                "load": r["load_time_s"]["median"],
                "ttft": r["ttft_s"]["median"] * 1e3,
                "prefill": {k: v["median"] for k, v in r["prefill_tokens_per_s"].items()},
                "decode": r["decode_tokens_per_s"]["median"],
                "decode_p10": r["decode_tokens_per_s"]["p10"],
                "decode_p90": r["decode_tokens_per_s"]["p90"],
                "ppl": q.get("ppl"),
                "kl": q.get("vs_fp", {}).get("mean_kl"),
                "top1": q.get("vs_fp", {}).get("top1"),
                "kl_teacher": q.get("vs_teacher", {}).get("mean_kl"),
                "roofline": r.get("roofline_fraction"),
            }
        )
    return rows


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(results: dict[str, Any]) -> str:
    rec = results.get("recommendation") or {}
    lines = [
        f"# Benchmark: {results.get('model') or ''}",
        "",
        f"Suite **{results['suite']}**, target **{results.get('target') or 'host'}**, host "
        f"{results['host']['cpus']} CPUs, {results['host']['bandwidth_gbs']} GB/s measured copy bandwidth.",
        "",
    ]
    if rec.get("quant"):
        lines += [f"**Recommended: {rec['quant']}** ({rec['basis']}). {rec['reason']}.", ""]
    elif rec:
        lines += [f"**No recommendation:** {rec['reason']}.", ""]
    lines += [
        "| level | size MiB | peak RSS MiB | load s | TTFT ms | decode tok/s (p10–p90) | roofline | ppl | "
        "KL vs fp | top-1 vs fp | KL vs teacher |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in _rows(results):
        if "error" in r:
            lines.append(f"| {r['quant']} | {r['error']} |||||||||| ")
            continue
        lines.append(
            f"| {r['quant']} | {r['mib']:.2f} | {r['rss']:.0f} | {r['load']:.2f} | {r['ttft']:.1f} | "
            f"{r['decode']:,.0f} ({r['decode_p10']:,.0f}–{r['decode_p90']:,.0f}) | {_fmt(r['roofline'], '.0%')} | "
            f"{_fmt(r['ppl'], '.2f')} | {_fmt(r['kl'], '.2e')} | {_fmt(r['top1'], '.3f')} | "
            f"{_fmt(r['kl_teacher'], '.3f')} |"
        )
    lines += [
        "",
        "Medians over repeated runs after warm-up; p10–p90 is the spread. Roofline: measured decode speed as "
        "a fraction of host bandwidth ÷ bytes read per token. KL in nats/token on held-out text.",
    ]
    return "\n".join(lines) + "\n"


def _plots(rows: list[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r and r["kl"] is not None]
    if not ok:
        return []
    images = []
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    sc = ax.scatter(
        [r["mib"] for r in ok],
        [max(r["kl"], 1e-9) for r in ok],
        c=[r["decode"] for r in ok],
        cmap="viridis",
        s=90,
        edgecolors="black",
    )
    for r in ok:
        ax.annotate(r["quant"], (r["mib"], max(r["kl"], 1e-9)), textcoords="offset points", xytext=(6, 6))
    ax.set(
        xlabel="file size (MiB)",
        ylabel="mean KL vs fp model (nats/token, log)",
        yscale="log",
        title="Size vs quality (colour: decode tokens/s)",
    )
    fig.colorbar(sc, ax=ax, label="decode tokens/s")
    ax.grid(alpha=0.3)
    images.append(_png(fig))
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6), dpi=110)
    names = [r["quant"] for r in ok]
    axes[0].bar(
        names,
        [r["decode"] for r in ok],
        color="#3b7dd8",
        yerr=[[r["decode"] - r["decode_p10"] for r in ok], [r["decode_p90"] - r["decode"] for r in ok]],
    )
    axes[0].set(title="decode tokens/s (median, p10–p90)")
    axes[1].bar(names, [r["mib"] for r in ok], color="#e0823d")
    axes[1].set(title="file size (MiB)")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    images.append(_png(fig))
    plt.close("all")
    return images


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1000px;margin:2em auto;color:#222;
padding:0 1em}h1{font-size:1.5em}.rec{background:#eef7ee;border-left:5px solid #2e8b57;padding:.8em 1em;margin:1em 0}
.warn{background:#fdf0e6;border-left:5px solid #d2691e;padding:.8em 1em}table{border-collapse:collapse;width:100%;
font-size:.9em}th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:right}th:first-child,td:first-child{
text-align:left}tr.best{background:#f3faf3;font-weight:600}img{max-width:100%}.note{color:#666;font-size:.85em}"""


def html_page(results: dict[str, Any]) -> str:
    rec = results.get("recommendation") or {}
    esc = html.escape
    body = [
        f"<h1>edgekit benchmark — {esc(str(results.get('model') or ''))}</h1>",
        f"<p>Suite <b>{esc(results['suite'])}</b> · target <b>{esc(str(results.get('target') or 'host'))}</b> · "
        f"host {results['host']['cpus']} CPUs, {results['host']['bandwidth_gbs']} GB/s copy bandwidth</p>",
    ]
    if rec.get("quant"):
        body.append(
            f"<div class='rec'><b>Recommended: {esc(rec['quant'])}</b> ({esc(rec['basis'])}).<br>"
            f"{esc(rec['reason'])}.</div>"
        )
    elif rec:
        body.append(f"<div class='warn'><b>No recommendation.</b> {esc(rec['reason'])}.</div>")
    head = [
        "level",
        "size MiB",
        "peak RSS MiB",
        "TTFT ms",
        "decode tok/s",
        "p10–p90",
        "roofline",
        "ppl",
        "KL vs fp",
        "top-1",
        "KL vs teacher",
    ]
    body.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
    for r in _rows(results):
        if "error" in r:
            body.append(f"<tr><td>{esc(r['quant'])}</td><td colspan=10>{esc(r['error'])}</td></tr>")
            continue
        cls = " class='best'" if r["quant"] == rec.get("quant") else ""
        cells = [
            r["quant"],
            f"{r['mib']:.2f}",
            f"{r['rss']:.0f}",
            f"{r['ttft']:.1f}",
            f"{r['decode']:,.0f}",
            f"{r['decode_p10']:,.0f}–{r['decode_p90']:,.0f}",
            _fmt(r["roofline"], ".0%"),
            _fmt(r["ppl"], ".2f"),
            _fmt(r["kl"], ".2e"),
            _fmt(r["top1"], ".3f"),
            _fmt(r["kl_teacher"], ".3f"),
        ]
        body.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    body.append("</table>")
    body += [f"<p><img alt='plot' src='data:image/png;base64,{img}'></p>" for img in _plots(_rows(results))]
    body.append(
        "<p class='note'>Medians over repeated runs after warm-up; p10–p90 is the spread. Roofline: measured "
        "decode speed ÷ (host bandwidth ÷ bytes read per token). KL in nats/token on held-out text; "
        "vs fp = against the unquantized student, vs teacher = against the model it was distilled from.</p>"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>edgekit benchmark</title><style>{_CSS}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )


def write_report(results: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write report.md and report.html into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    md = write_text_atomic(out_dir / "report.md", markdown(results))
    page = write_text_atomic(out_dir / "report.html", html_page(results))
    return md, page
