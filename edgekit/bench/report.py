"""The benchmark report: Markdown for terminals and diffs, a self-contained HTML page to look at.

Both start with the recommendation, then two tables (speed and memory; quality) with units in every
header, then what did not run and why. The HTML carries its plots inline (base64 PNG, edgekit.bench.plots),
so it can be mailed or opened from a bundle with no other files.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.bench.plots import level_bars, pareto_plot
from edgekit.fileio import write_text_atomic
from edgekit.predict import sig3

MiB = 2**20
Column = tuple[str, Callable[[dict[str, Any]], str]]  # header (with unit), cell text of one result


def _fmt(value: float | None, spec: str) -> str:
    """``spec`` "3s" means three significant figures (edgekit.predict.sig3); else a format spec."""
    if value is None or value != value:  # value != value: NaN
        return "–"
    return sig3(value) if spec == "3s" else format(value, spec)


def _median(r: dict[str, Any], key: str, scale: float = 1.0, spec: str = "3s") -> str:
    value = r[key]["median"]
    return _fmt(value * scale if value is not None else None, spec)


def _spread(summary: dict[str, float], spec: str = "3s") -> str:
    return f"{_fmt(summary['median'], spec)} ({_fmt(summary['p10'], spec)}–{_fmt(summary['p90'], spec)})"


def _compare(r: dict[str, Any], ref: str, field: str, spec: str) -> str:
    return _fmt((r.get("quality") or {}).get(ref, {}).get(field), spec)


def speed_columns(results: dict[str, Any]) -> list[Column]:
    """Speed and memory: one column per metric, one per prompt length, the target prediction if any."""
    measured = [r for r in results["results"] if not r.get("error")]
    lengths = list(measured[0]["prefill_tokens_per_s"]) if measured else []
    columns: list[Column] = [
        ("level", lambda r: r["quant"]),
        ("file (MiB)", lambda r: sig3(r["file_size_bytes"] / MiB)),
        ("peak RSS (MiB)", lambda r: sig3(r["peak_rss_bytes"] / MiB)),
        ("load (s)", lambda r: _median(r, "load_time_s")),
        ("TTFT (ms)", lambda r: _median(r, "ttft_s", 1e3)),
    ]
    for length in lengths:
        columns.append((f"pp{length} (tok/s)", lambda r, k=length: _fmt(r["prefill_tokens_per_s"][k]["median"], "3s")))
    columns += [
        (f"{_tg(measured)} (tok/s, p10–p90)", lambda r: _spread(r["decode_tokens_per_s"])),
        ("roofline fraction", lambda r: _fmt(r.get("roofline_fraction"), ".0%")),
    ]
    if any(r.get("gpu_memory_bytes") is not None for r in measured):
        columns.append(("GPU memory (MiB)", lambda r: _fmt((r.get("gpu_memory_bytes") or 0) / MiB, ",.0f")))
    if results.get("target"):
        columns.append(
            (
                f"decode on {results['target']}, predicted (tok/s)",
                _predicted_cell,
            )
        )
    return columns


def _tg(measured: list[dict[str, Any]]) -> str:
    """llama-bench's name for the decode test: tg128 for 128 requested new tokens."""
    n = next((r.get("decode_tokens_requested") for r in measured if r.get("decode_tokens_requested")), None)
    return f"tg{n}" if n else "decode"


def _predicted_cell(r: dict[str, Any]) -> str:
    mid, low, high = (
        r.get(k) for k in ("predicted_decode_tokens_per_s", "predicted_decode_low", "predicted_decode_high")
    )
    if mid is None:
        return "–"
    return f"{sig3(mid)} ({sig3(low)}–{sig3(high)})" if low is not None and low != high else sig3(mid)


QUALITY_COLUMNS: list[Column] = [
    ("level", lambda r: r["quant"]),
    ("ppl", lambda r: _fmt((r.get("quality") or {}).get("ppl"), "3s")),
    ("KL vs fp (nats/tok)", lambda r: _compare(r, "vs_fp", "mean_kl", ".3g")),
    ("top-1 vs fp", lambda r: _compare(r, "vs_fp", "top1", "3s")),
    ("ppl change vs fp", lambda r: _compare(r, "vs_fp", "ppl_change", "+.2%")),
    ("KL vs teacher (nats/tok)", lambda r: _compare(r, "vs_teacher", "mean_kl", ".3g")),
    ("top-1 vs teacher", lambda r: _compare(r, "vs_teacher", "top1", "3s")),
]


def quality_columns(results: dict[str, Any]) -> list[Column]:
    """QUALITY_COLUMNS less those no artifact has a value for (no teacher given: no teacher columns)."""
    measured = [r for r in results["results"] if not r.get("error")]
    return [(h, c) for i, (h, c) in enumerate(QUALITY_COLUMNS) if i == 0 or any(c(r) != "–" for r in measured)]


def _setting(results: dict[str, Any]) -> str:
    host = results["host"]
    parts = [
        f"suite {results['suite']}",
        _target(results),
        f"host {host['cpus']} CPUs, {host['memory_bytes'] / 2**30:,.1f} GiB, "
        f"{host['bandwidth_gbs']} GB/s measured copy bandwidth",
    ]
    if results.get("limited_to_target"):
        parts.append("each run held to the target's threads and memory budget")
    if results.get("gpu"):
        parts.append(f"GPU offload ({host.get('gpu_bandwidth_gbs')} GB/s device copy bandwidth)")
    return "; ".join(parts)


def _target(results: dict[str, Any]) -> str:
    budget = results.get("target_budget")
    if not results.get("target"):
        return "no target"
    if not budget:
        return f"target {results['target']}"
    return (
        f"target {results['target']} ({budget['memory_mb']:,.0f} MiB budget, at least "
        f"{budget['min_decode_tokens_per_s']:g} tokens/s)"
    )


def _model_name(results: dict[str, Any]) -> str:
    return Path(results["model"]).name if results.get("model") else "artifacts"


NOTE = (
    "Medians over every kept run (the suite's rounds of fresh processes × its repeats; warm-up runs are "
    "discarded); p10–p90 is the spread between runs. Peak RSS is sampled in an isolated child process. "
    "Roofline: measured decode speed as a fraction of host bandwidth ÷ bytes read per token. Predicted on "
    "the target: the fraction of the target's bandwidth llama.cpp reaches there (calibrated on published runs, "
    "the profile's [calibration]) ÷ bytes read per token at its full context, with its range; a prediction, "
    "not a measurement. pp and tg columns are llama-bench's tests (prompt and generation tokens/s). "
    "KL in nats per token on held-out text; vs fp = against the unquantized model, vs teacher "
    "= against the model it was distilled from."
)


def _recommendation_line(rec: dict[str, Any]) -> tuple[str, str] | None:
    if not rec:
        return None
    if rec.get("quant"):
        return f"Recommended: {rec['quant']}", f"{rec['reason']}."
    return "No recommendation", f"{rec['reason']}."


def markdown(results: dict[str, Any]) -> str:
    """The report as GitHub-flavoured Markdown."""
    lines = [f"# Benchmark: {_model_name(results)}", "", _setting(results) + ".", ""]
    rec = _recommendation_line(results.get("recommendation") or {})
    if rec:
        lines += [f"**{rec[0]}.** {rec[1]}", ""]
    measured = [r for r in results["results"] if not r.get("error")]
    for title, columns in (("Speed and memory", speed_columns(results)), ("Quality", quality_columns(results))):
        lines += [f"## {title}", "", "| " + " | ".join(h for h, _ in columns) + " |"]
        lines.append("|" + "|".join(":---" if i == 0 else "---:" for i in range(len(columns))) + "|")
        lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in measured]
        lines.append("")
    failed = [r for r in results["results"] if r.get("error")]
    if failed:
        lines += ["## Did not run", ""] + [f"- {Path(r['artifact']).name}: {r['error']}" for r in failed] + [""]
    lines.append(NOTE)
    return "\n".join(lines) + "\n"


_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}h1{font-size:1.45em;margin-bottom:.2em}h2{font-size:1.1em;margin-top:1.6em}
.meta{color:#555;margin-top:0}.rec{background:#eef7ee;border-left:5px solid #2e8b57;padding:.7em 1em;margin:1em 0}
.warn{background:#fdf0e6;border-left:5px solid #d2691e;padding:.7em 1em;margin:1em 0}
table{border-collapse:collapse;font-size:.88em;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #ddd;padding:.35em .6em;text-align:right;white-space:nowrap}
th{background:#f6f6f6;vertical-align:bottom;white-space:normal;min-width:4em}th:first-child,td:first-child{text-align:left}
tr.best td{background:#f0f8f0;font-weight:600}.plots img{max-width:100%;display:block;margin:1em 0}
.wide{overflow-x:auto}.note{color:#666;font-size:.85em;max-width:60em}li{margin:.2em 0}"""


def _html_table(columns: list[Column], rows: list[dict[str, Any]], best: str | None) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h, _ in columns)
    body = "".join(
        f"<tr{' class=best' if r['quant'] == best else ''}>"
        + "".join(f"<td>{esc(c(r))}</td>" for _, c in columns)
        + "</tr>"
        for r in rows
    )
    return f"<div class=wide><table><tr>{head}</tr>{body}</table></div>"


def html_page(results: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (inline CSS and PNG plots)."""
    esc = html.escape
    rec_dict = results.get("recommendation") or {}
    body = [f"<h1>edgekit benchmark: {esc(_model_name(results))}</h1>", f"<p class=meta>{esc(_setting(results))}</p>"]
    rec = _recommendation_line(rec_dict)
    if rec:
        css = "rec" if rec_dict.get("quant") else "warn"
        body.append(f"<div class={css}><b>{esc(rec[0])}</b> ({esc(rec_dict['basis'])} speed)<br>{esc(rec[1])}</div>")
    measured = [r for r in results["results"] if not r.get("error")]
    best = rec_dict.get("quant")
    body += ["<h2>Speed and memory</h2>", _html_table(speed_columns(results), measured, best)]
    body += ["<h2>Quality</h2>", _html_table(quality_columns(results), measured, best)]
    failed = [r for r in results["results"] if r.get("error")]
    if failed:
        items = "".join(f"<li><b>{esc(Path(r['artifact']).name)}</b>: {esc(r['error'])}</li>" for r in failed)
        body.append(f"<h2>Did not run</h2><ul>{items}</ul>")
    budget = (results.get("target_budget") or {}).get("memory_mb")
    images = [img for img in (pareto_plot(measured, best), level_bars(measured, budget)) if img]
    body.append(
        "<div class=plots>"
        + "".join(f"<img alt='benchmark plot' src='data:image/png;base64,{i}'>" for i in images)
        + "</div>"
    )
    body.append(f"<p class=note>{esc(NOTE)}</p>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>edgekit benchmark</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_report(results: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write report.md and report.html into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    md = write_text_atomic(out_dir / "report.md", markdown(results))
    page = write_text_atomic(out_dir / "report.html", html_page(results))
    return md, page
