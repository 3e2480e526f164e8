"""What the build report and ``edgekit inspect`` show, read from the manifest alone, formatted once.

``add_report_fields`` puts into the manifest what the report needs and the stages did not record:
the target profile, each stage model's lineage row (edgekit.pipeline.lineage), and each artifact's
calibrated prediction on the target (edgekit.predict) with the memory it needs there. Every number a
person reads — in report.md, report.html or ``edgekit inspect`` — is then formatted here from the
manifest, to three significant figures, so the three can never disagree.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from edgekit.predict import sig3

MiB = 2**20


def add_report_fields(
    manifest: dict[str, Any],
    *,
    profile,
    export_dir: Path,
    model_path: Path,
    stage_models: list[tuple[str, Path]],
    stage_seconds: dict[str, float],
    heldout_tokens: int | None = None,
) -> dict[str, Any]:
    """``manifest`` with ``target_profile``, ``lineage`` and every artifact's ``predicted`` on the target.

    ``heldout_tokens``: the bench's quality tokens, so that the stage models are scored on the very
    rows the shipped files were (one perplexity axis in the report); default the lineage's own count.
    """
    from edgekit import predict
    from edgekit.models import load_config
    from edgekit.pipeline.lineage import HELDOUT_TOKENS, stage_rows
    from edgekit.plan import overhead_bytes

    config = load_config(model_path)
    manifest["target_profile"] = profile.model_dump(mode="json")
    manifest["lineage"] = stage_rows(
        stage_models, stage_models[0][1], stage_seconds, tokens=heldout_tokens or HELDOUT_TOKENS
    )
    for a in manifest["artifacts"]:
        p = predict.artifact_prediction(export_dir / a["path"], profile, manifest["student"]["parameters"])
        p["memory_bytes"] = a["file_size_bytes"] + p["kv_bytes"] + overhead_bytes(config)
        p["fits"] = p["memory_bytes"] <= profile.budget.memory_mb * MiB
        p["meets_floor"] = p["decode_tokens_per_s"] >= profile.budget.min_decode_tokens_per_s
        a["predicted"] = p
    return manifest


def kl(value: float | None) -> str:
    """KL and other small losses: three significant figures, scientific when tiny."""
    return "–" if value is None else f"{value:.3g}"


def mib(n: float | None) -> str:
    return "–" if n is None else sig3(n / MiB)


def sha256_of(manifest: dict[str, Any], path: str) -> str | None:
    """The sha256 the manifest lists for ``path`` (a folder: None; its files are listed one by one)."""
    return next((f["sha256"] for f in manifest.get("files", []) if f["path"] == path), None)


def host_columns(manifest: dict[str, Any]) -> tuple[str | None, str | None]:
    """The llama-bench-comparable host columns this bench measured: ("pp512", "tg128") when present."""
    bench = [a.get("bench") or {} for a in manifest["artifacts"]]
    lengths = sorted({int(k) for b in bench for k in (b.get("prefill_tokens_per_s") or {})})
    pp = str(max(lengths)) if lengths else None
    n = next((b.get("decode_tokens_requested") for b in bench if b.get("decode_tokens_requested")), None)
    return pp, (f"tg{n}" if n else ("tg" if any(b.get("decode_tokens_per_s") for b in bench) else None))


def artifact_rows(manifest: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the artifact table: target predictions, verification, then host measurements."""
    pp, tg = host_columns(manifest)
    headers = [  # the target is named in the table's title and note: headers stay narrow enough to read
        "level",
        "file (MiB)",
        "target memory (MiB)",
        "target decode (tok/s)",
        "target prefill (tok/s)",
        "KL vs fp (nats/tok)",
        "top-1 vs fp",
        "verified",
        "ppl (held-out)",
        "KL vs teacher (nats/tok)",
    ]
    if pp:
        headers.append(f"host pp{pp} (tok/s)")
    if tg:
        headers.append(f"host {tg} (tok/s)")
    measured = any(a.get("bench") for a in manifest["artifacts"])
    if measured:
        headers.append("host peak RSS (MiB)")
    rec = (manifest.get("recommended") or {}).get("artifact")
    rows = []
    for a in manifest["artifacts"]:
        v, b, p = a.get("verification") or {}, a.get("bench") or {}, a.get("predicted") or {}
        speed = "–"
        if p:
            low, mid, high = (
                p[k] for k in ("decode_low_tokens_per_s", "decode_tokens_per_s", "decode_high_tokens_per_s")
            )
            speed = f"{sig3(mid)} ({sig3(low)}–{sig3(high)})" if low != high else sig3(mid)
        row = [
            f"{a['format']} {a['quant']}" + (" ★" if a["path"] == rec else ""),
            mib(a["file_size_bytes"]),
            mib(p.get("memory_bytes")),
            speed,
            sig3(p.get("prefill_tokens_per_s")),
            kl(v.get("mean_kl")),
            sig3(v.get("top1")),
            {True: "yes", False: "no"}.get(v.get("passed"), "not run"),
            sig3(b.get("perplexity")),
            kl(b.get("mean_kl_vs_teacher")),
        ]
        if pp:
            row.append(sig3((b.get("prefill_tokens_per_s") or {}).get(pp)))
        if tg:
            row.append(sig3(b.get("decode_tokens_per_s")))
        if measured:
            row.append(mib(b.get("peak_rss_bytes")))
        rows.append(row)
    return headers, rows


STAGE_HEADERS = [
    "stage",
    "parameters",
    "size (MiB)",
    "ppl (held-out)",
    "KL vs teacher (nats/tok)",
    "top-1 vs teacher",
    "time (s)",
]


def stage_rows(manifest: dict[str, Any]) -> list[list[str]]:
    """One row per pipeline stage model (teacher first, its perplexity the baseline), then each shipped level."""
    stages = {s["name"]: s for s in manifest.get("stages", [])}
    rows = []
    for r in manifest.get("lineage") or []:
        s = stages.get(r["stage"], {})
        time = "–" if r["stage"] == "teacher" else sig3(r.get("seconds"))
        if s.get("skipped"):
            time += " (cached)"
        rows.append(
            [
                r["stage"],
                f"{r['parameters']:,}",
                mib(r.get("size_bytes")),
                sig3(r.get("perplexity")),
                "0 (baseline)" if r["stage"] == "teacher" else kl(r.get("mean_kl_vs_teacher")),
                "1 (baseline)" if r["stage"] == "teacher" else sig3(r.get("top1_vs_teacher")),
                time,
            ]
        )
    for a in manifest["artifacts"]:
        b = a.get("bench") or {}
        rows.append(
            [
                f"export {a['quant']}",
                f"{manifest['student']['parameters']:,}",
                mib(a["file_size_bytes"]),
                sig3(b.get("perplexity")),
                kl(b.get("mean_kl_vs_teacher")),
                "–",
                "–",
            ]
        )
    return rows


def ship(manifest: dict[str, Any], bundle: str = ".") -> dict[str, Any]:
    """The recommended file, its sha256, why, and copy-paste commands that run it on the device."""
    rec = manifest.get("recommended") or {}
    path = rec.get("artifact")
    profile = manifest.get("target_profile") or {}
    runtime, budget = profile.get("runtime", {}), profile.get("budget", {})
    threads, ctx = runtime.get("threads", 4), budget.get("context_length", 2048)
    gpu = runtime.get("gpu_layers", 0)
    ngl = f" -ngl {gpu}" if gpu else ""
    commands: list[tuple[str, str]] = []
    if path:
        file = shlex.quote(f"{bundle}/{path}")
        commands.append(("check the download", f"sha256sum {file}"))
        if path.endswith(".gguf"):
            commands += [
                ("llama.cpp, chat", f"llama-cli -m {file} -t {threads} -c {ctx}{ngl} -cnv"),
                ("llama.cpp, HTTP server", f"llama-server -m {file} -t {threads} -c {ctx}{ngl} --port 8080"),
                ("llama.cpp, speed on the device", f"llama-bench -m {file} -t {threads} -p 512 -n 128{ngl}"),
            ]
    onnx = [a for a in manifest["artifacts"] if a["format"] == "onnx"]
    if onnx:
        onnx_dir = f"{bundle}/{onnx[0]['path']}"
        snippet = "\n".join(
            [
                "python - <<'EOF'",
                "import onnxruntime_genai as og",
                f"model = og.Model({onnx_dir!r})",
                "tokenizer = og.Tokenizer(model)",
                "params = og.GeneratorParams(model)",
                "params.set_search_options(max_length=128)",
                "generator = og.Generator(model, params)",
                "generator.append_tokens(tokenizer.encode('Once upon a time'))",
                "while not generator.is_done():",
                "    generator.generate_next_token()",
                "print(tokenizer.decode(generator.get_sequence(0)))",
                "EOF",
            ]
        )
        commands.append((f"ONNX Runtime GenAI ({onnx[0]['quant']})", snippet))
    target = manifest.get("target", "TARGET")
    commands.append(
        ("edgekit (the recommended file)", f"edgekit run {shlex.quote(bundle)} --target {target} -p 'Once upon a time'")
    )
    return {
        "artifact": path,
        "quant": rec.get("quant"),
        "sha256": sha256_of(manifest, path) if path else None,
        "reason": rec.get("reason", ""),
        "meets_target": rec.get("meets_target", True),
        "commands": commands,
    }
