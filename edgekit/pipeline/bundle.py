"""Assemble the deliverable: ``export/<target>/<model>/`` with artifacts, manifest and report.

The bundle is written under a temporary name and renamed into place, so a reader never sees a
half-written bundle. ``manifest.json`` lists every file with its sha256, the versions of every tool
involved, each stage's key and timing, verification and bench results, and the recommended artifact.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import shutil
from pathlib import Path
from typing import Any

from edgekit.export.sidecar import sidecar_path
from edgekit.fileio import atomic_path, read_json, remove_stale_temporaries, sha256_file, write_json_atomic

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
_PACKAGES = (
    "edgekit",
    "torch",
    "transformers",
    "llama-cpp-python",
    "gguf",
    "onnxruntime",
    "onnxruntime-genai",
    "onnx",
    "onnx-ir",
    "optimum",
)


def tool_versions() -> dict[str, str | None]:
    """Installed versions of everything that shaped the artifacts (None when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_bundle(
    bundle: Path,
    *,
    export_dir: Path,
    artifacts: list[dict[str, Any]],
    model_dir: Path,
    target_file: Path,
    report_dir: Path | None,
    manifest: dict[str, Any],
) -> Path:
    """Copy artifacts (with sidecars), tokenizer, profile and report into ``bundle``; write the manifest."""
    remove_stale_temporaries(bundle)  # left by a build killed while bundling
    with atomic_path(bundle) as tmp:
        tmp.mkdir()
        for entry in artifacts:
            _copy_artifact(export_dir / entry["path"], tmp / entry["path"], work=export_dir.parent.parent)
        (tmp / "tokenizer").mkdir()
        for name in TOKENIZER_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / "tokenizer" / name)
        shutil.copy2(model_dir / "config.json", tmp / "tokenizer" / "config.json")
        shutil.copy2(target_file, tmp / "target.toml")
        if report_dir is not None and (report_dir / "results.json").is_file():
            shutil.copy2(report_dir / "results.json", tmp / "results.json")
        for name in ("report.html", "report.md"):  # the bench's own page; the bundle's report is the build's
            if report_dir is not None and (report_dir / name).is_file():
                (tmp / "bench").mkdir(exist_ok=True)
                shutil.copy2(report_dir / name, tmp / "bench" / name)
        full = {
            "schema_version": MANIFEST_SCHEMA,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": tool_versions(),
            **manifest,
            "files": _file_list(tmp),
        }
        _write_build_report(tmp, full)
        write_json_atomic(tmp / MANIFEST, full)
    return bundle


def _file_list(folder: Path) -> list[dict[str, Any]]:
    return [
        {"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def _write_build_report(folder: Path, manifest: dict[str, Any]) -> None:
    """report.md and report.html made from ``manifest`` (whose file list they then join, with their sha256)."""
    from edgekit.pipeline.report import write_build_report

    for page in write_build_report(folder, manifest):
        manifest["files"].append(
            {"path": page.relative_to(folder).as_posix(), "bytes": page.stat().st_size, "sha256": sha256_file(page)}
        )


def _copy_artifact(src: Path, dst: Path, work: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    sidecar = sidecar_path(src)
    if sidecar.is_file():  # a folder's sidecar was copied with it and is rewritten in place
        write_json_atomic(sidecar_path(dst), _portable_sidecar(read_json(sidecar), dst.name, work))


def _portable_sidecar(data: dict[str, Any], artifact: str, work: Path) -> dict[str, Any]:
    """The sidecar as the bundle ships it: no path of this machine's work folder.

    The source model becomes its stage folder (``stages/recover-<key>/model``, the key the manifest
    lists) and the verified artifact the file beside the sidecar; hashes say the rest.
    """
    data = dict(data)
    source = Path(data["source_model"]).resolve() if data.get("source_model") else None
    if source and source.is_relative_to(work.resolve()):  # a user's own model keeps its path
        data["source_model"] = source.relative_to(work.resolve()).as_posix()
    if isinstance(data.get("verification"), dict):
        data["verification"] = {**data["verification"], "artifact": artifact}
    return data


def bench_summary(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per artifact path: the headline measurements (medians; seconds, bytes, tokens/s, nats/token).

    The full distributions stay in ``results.json``; the manifest carries what a reader compares.
    """

    def median(value: Any) -> float | None:
        return value.get("median") if isinstance(value, dict) else value

    summary = {}
    for r in results.get("results", []):
        quality = r.get("quality") or {}
        vs_fp, vs_teacher = quality.get("vs_fp") or {}, quality.get("vs_teacher") or {}
        summary[r["artifact"]] = {
            "error": r.get("error"),
            "load_time_s": median(r.get("load_time_s")),
            "ttft_s": median(r.get("ttft_s")),
            "prefill_tokens_per_s": {n: median(v) for n, v in (r.get("prefill_tokens_per_s") or {}).items()},
            "decode_tokens_per_s": median(r.get("decode_tokens_per_s")),
            "decode_tokens_requested": r.get("decode_tokens_requested"),
            "predicted_decode_tokens_per_s": r.get("predicted_decode_tokens_per_s"),
            "peak_rss_bytes": r.get("peak_rss_bytes"),
            "perplexity": quality.get("ppl"),
            "heldout_tokens": quality.get("tokens"),
            "mean_kl_vs_fp": vs_fp.get("mean_kl"),
            "top1_vs_fp": vs_fp.get("top1"),
            "mean_kl_vs_teacher": vs_teacher.get("mean_kl"),
        }
    return summary


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    """The bundle's manifest, checked against its schema (``bundle_check.load_manifest``)."""
    from edgekit.pipeline.bundle_check import load_manifest

    return load_manifest(bundle)
