"""The build report: what to ship and why, and the pipeline's story, made from the bundle's manifest.

``report.md`` (for terminals and diffs) and ``report.html`` (self-contained: inline CSS and PNG plots)
say, in order: which file to ship, its sha256, why, and the commands that run it on the device; the
levels built, with the target's figures (calibrated predictions, or measured on the device) apart from
this host's measurements; the size × quality × speed trade-off; and each pipeline stage's model
against the teacher. Every number is formatted by edgekit.pipeline.summary, as ``edgekit inspect``'s are.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from edgekit.fileio import write_text_atomic
from edgekit.pipeline import summary as s
from edgekit.predict import sig3

SMALL_MODEL_BYTES = 100 * 2**20  # below this per token, the calibration (0.6-40 GB per token) does not reach
HOST_NOTE = (
    "Host columns are measured on the machine that ran the build ({host}), not on the target: they show "
    "that each file runs and how the levels compare, not the device's speed. pp{pp} and {tg} are the "
    "same tests as llama-bench's (prompt tokens/s over a {pp}-token prompt; generated tokens/s over "
    "{n} new tokens)."
)


PIPELINE_NOTE = (
    "Perplexity on the built-in corpus's held-out text; KL(teacher ‖ model) in nats per token and top-1 "
    "agreement on the same tokens; the teacher's own perplexity is the baseline. Export rows: the shipped "
    "files, scored by the bench on the same held-out rows as the stage models."
)


def _setting(m: dict[str, Any]) -> str:
    p = m.get("target_profile") or {}
    hw, b = p.get("hardware", {}), p.get("budget", {})
    parts = [f"target {m['target']}"]
    if hw:
        parts.append(f"{hw.get('device')}, {hw.get('memory_bandwidth_gbs'):g} GB/s")
    if b:
        parts.append(
            f"budget {b['memory_mb']:,.0f} MiB, at least {b['min_decode_tokens_per_s']:g} tokens/s, "
            f"context {b['context_length']:,} tokens"
        )
    parts.append(f"teacher {m['teacher']['source']}; student {m['student']['parameters']:,} parameters")
    return "; ".join(parts)


def _speed_line(m: dict[str, Any], ship: dict[str, Any]) -> str:
    a = next((a for a in m["artifacts"] if a["path"] == ship["artifact"]), None)
    p = (a or {}).get("predicted")
    rec = m.get("recommended") or {}
    if rec.get("basis") == "measured" and rec.get("decode_tokens_per_s"):
        return f"Decode on the device: {sig3(rec['decode_tokens_per_s'])} tokens/s, measured there."
    if not p:
        return ""
    small = ""
    if p["weight_bytes_per_token"] < SMALL_MODEL_BYTES:
        small = (
            " The calibration runs read 0.6–40 GB per token; at a few MiB per token the runtime's fixed "
            "per-token work, not memory bandwidth, sets the pace, so take this figure as an upper bound."
        )
    return (
        f"Decode on {m['target']}: {sig3(p['decode_tokens_per_s'])} tokens/s predicted "
        f"({sig3(p['decode_low_tokens_per_s'])}–{sig3(p['decode_high_tokens_per_s'])}), at its full "
        f"{p['context']:,}-token context: {p['note']}.{small} Measure it there with the llama-bench command below."
    )


def _host(m: dict[str, Any]) -> str:
    host = (m.get("bench") or {}).get("host") or {}
    if not host:
        return "no bench was run"
    return f"{host.get('cpus')} CPUs, {host.get('bandwidth_gbs')} GB/s measured copy bandwidth"


def _host_note(m: dict[str, Any]) -> str | None:
    pp, tg = s.host_columns(m)
    if not (pp or tg):
        return None
    n = tg[2:] if tg and tg.startswith("tg") and tg[2:] else "the suite's"
    return HOST_NOTE.format(host=_host(m), pp=pp or "–", tg=tg or "tg", n=n)


def _plot_points(m: dict[str, Any]) -> list[dict[str, Any]]:
    rec = (m.get("recommended") or {}).get("artifact")
    points = []
    for a in m["artifacts"]:
        p = a.get("predicted")
        if not p:
            continue
        points.append(
            {
                "level": f"{a['quant']}",
                "memory_mib": p["memory_bytes"] / s.MiB,
                "kl": (a.get("verification") or {}).get("mean_kl"),
                "speed": p["decode_tokens_per_s"],
                "low": p["decode_low_tokens_per_s"],
                "high": p["decode_high_tokens_per_s"],
                "recommended": a["path"] == rec,
            }
        )
    return points


def _plots(m: dict[str, Any]) -> list[tuple[str, str]]:
    """(caption, base64 PNG) for each figure the manifest has data for."""
    from edgekit.bench.plots import host_plot, stage_plot, tradeoff_plot

    b = (m.get("target_profile") or {}).get("budget", {})
    out = []
    trade = tradeoff_plot(_plot_points(m), b.get("memory_mb", 0), b.get("min_decode_tokens_per_s", 0), m["target"])
    if trade:
        out.append(("Size, quality and predicted speed on the target", trade))
    stages = [{"name": r["stage"], "perplexity": r.get("perplexity"), "kind": "stage"} for r in m.get("lineage") or []]
    stages += [
        {"name": f"export {a['quant']}", "perplexity": (a.get("bench") or {}).get("perplexity"), "kind": "export"}
        for a in m["artifacts"]
    ]
    stage = stage_plot(stages)
    if stage:
        out.append(("Held-out perplexity of each stage's model and of the shipped files", stage))
    bench = [a.get("bench") or {} for a in m["artifacts"]]
    hosted = host_plot(
        [a["quant"] for a in m["artifacts"]],
        [b.get("decode_tokens_per_s") for b in bench],
        [(b.get("peak_rss_bytes") or 0) / s.MiB or None for b in bench],
        _host(m),
    )
    if hosted:
        out.append(("Measured on the build host", hosted))
    return out


def _missing(m: dict[str, Any]) -> list[str]:
    notes = []
    if not m.get("lineage"):
        notes.append("This manifest has no lineage rows (built before edgekit recorded them): no stage table.")
    if not m.get("bench"):
        notes.append("No bench was run: no host measurements, perplexity of the exports or KL to the teacher.")
    return notes


def _model_name(m: dict[str, Any]) -> str:
    """The bundle's model as the report names it (manifests written by hand may lack the name)."""
    teacher = m.get("teacher") or {}
    return str(teacher.get("name") or teacher.get("source") or "model")


def markdown(m: dict[str, Any], bundle: str = ".") -> str:
    """The report as GitHub-flavoured Markdown."""
    ship = s.ship(m, bundle)
    lines = [f"# {_model_name(m)} for {m['target']}: what to ship", "", _setting(m) + ".", ""]
    if ship["artifact"]:
        flag = "" if ship["meets_target"] is not False else " (does **not** meet the target; the default)"
        lines += [
            f"## Ship `{ship['artifact']}`{flag}",
            "",
            f"- sha256: `{ship['sha256'] or '(a folder: see the files list of manifest.json)'}`",
            f"- why: {ship['reason']}.",
        ]
        speed = _speed_line(m, ship)
        if speed:
            lines.append(f"- {speed}")
        lines += ["", "Run it on the device (paths relative to this bundle):", ""]
        for label, command in ship["commands"]:
            lines += [f"{label}:", "", "```bash", command, "```", ""]
    headers, rows = s.artifact_rows(m)
    lines += ["## Levels built", "", _md_table(headers, rows), ""]
    lines += [
        f"Target columns are for {m['target']}: predictions (calibrated on published runs; the range in "
        "brackets), or measurements on it where the bench ran there. KL vs fp, top-1 and verified: the verify "
        "stage's gate; ppl and KL vs teacher: the bench's held-out tokens. ★ = recommended.",
        "",
    ]
    note = _host_note(m)
    if note:
        lines += [note, ""]
    lines += ["## The pipeline", "", _md_table(s.STAGE_HEADERS, s.stage_rows(m)), ""]
    lines += [
        PIPELINE_NOTE,
        "",
    ]
    lines += [f"_{n}_" for n in _missing(m)]
    return "\n".join(lines).rstrip() + "\n"


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(":--" if i == 0 else "--:" for i in range(len(headers))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1180px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em}
.meta{color:#555;margin-top:0}.ship{background:#eef7ee;border-left:6px solid #2e8b57;padding:.8em 1.1em;margin:1em 0}
.warn{background:#fdf0e6;border-left:6px solid #d2691e}.ship h2{margin-top:.2em}
code,pre{font-family:ui-monospace,'SFMono-Regular',Menlo,monospace;font-size:.86em}
pre{background:#f4f4f4;padding:.55em .8em;overflow-x:auto;margin:.2em 0 .8em;border-radius:4px}
.sha{word-break:break-all}.label{font-size:.85em;color:#444;margin:.5em 0 0}
table{border-collapse:collapse;font-size:.86em;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #ddd;padding:.35em .55em;text-align:right;white-space:nowrap}
th{background:#f6f6f6;vertical-align:bottom;white-space:normal;min-width:4.5em;max-width:9em}
th:first-child,td:first-child{text-align:left}th.host,td.host{background:#f7f7fb;color:#555}
tr.best td{background:#f0f8f0;font-weight:600}.wide{overflow-x:auto}
.note{color:#666;font-size:.85em;max-width:62em}figure{margin:1em 0}figure img{max-width:100%}
figcaption{font-size:.9em;color:#444}"""


def _html_table(headers: list[str], rows: list[list[str]], host_from: int | None = None) -> str:
    esc = html.escape

    def cls(i: int) -> str:
        return " class=host" if host_from is not None and i >= host_from else ""

    head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        f"<tr{' class=best' if r[0].endswith('★') else ''}>"
        + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<div class=wide><table><tr>{head}</tr>{body}</table></div>"


def html_page(m: dict[str, Any], bundle: str = ".") -> str:
    """The report as one self-contained HTML page."""
    esc = html.escape
    ship = s.ship(m, bundle)
    title = f"{_model_name(m)} for {m['target']}"
    body = [f"<h1>{esc(title)}: what to ship</h1>", f"<p class=meta>{esc(_setting(m))}</p>"]
    if ship["artifact"]:
        warn = ship["meets_target"] is False
        flag = " — does not meet the target (the default)" if warn else ""
        sha = ship["sha256"] or "(a folder: see the files list of manifest.json)"
        speed = _speed_line(m, ship)
        cmds = "".join(
            f"<p class=label>{esc(label)}</p><pre>{esc(command)}</pre>" for label, command in ship["commands"]
        )
        body.append(
            f"<div class='ship{' warn' if warn else ''}'><h2>Ship <code>{esc(ship['artifact'])}</code>{esc(flag)}</h2>"
            f"<p><b>sha256</b> <code class=sha>{esc(sha)}</code></p><p><b>Why:</b> {esc(ship['reason'])}.</p>"
            + (f"<p>{esc(speed)}</p>" if speed else "")
            + f"<p>Run it on the device (paths relative to this bundle):</p>{cmds}</div>"
        )
    headers, rows = s.artifact_rows(m)
    host_from = next((i for i, h in enumerate(headers) if h.startswith("host")), None)
    body += ["<h2>Levels built</h2>", _html_table(headers, rows, host_from)]
    note = _host_note(m)
    body.append(
        f"<p class=note>Target columns are for {esc(m['target'])}: predictions (calibrated on published runs; "
        "the range in brackets), or measurements on it where the bench ran there. KL vs fp, top-1 and verified: "
        "the verify stage's gate; ppl and KL vs teacher: the bench's held-out tokens. ★ = recommended."
        + (f" {esc(note)}" if note else "")
        + "</p>"
    )
    plots = _plots(m)
    for caption, image in plots[:1]:
        body.append(
            f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{image}'><figcaption>{esc(caption)}: "
            "hollow points and red bars are under the speed floor; the red line is the memory budget."
            "</figcaption></figure>"
        )
    body += ["<h2>The pipeline</h2>", _html_table(s.STAGE_HEADERS, s.stage_rows(m))]
    body.append(f"<p class=note>{esc(PIPELINE_NOTE)}</p>")
    for caption, image in plots[1:]:
        body.append(
            f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{image}'>"
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )
    body += [f"<p class=note><i>{esc(n)}</i></p>" for n in _missing(m)]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_build_report(folder: str | Path, manifest: dict[str, Any]) -> tuple[Path, Path]:
    """Write report.md and report.html into ``folder`` (a bundle being assembled)."""
    folder = Path(folder)
    md = write_text_atomic(folder / "report.md", markdown(manifest))
    page = write_text_atomic(folder / "report.html", html_page(manifest))
    return md, page
