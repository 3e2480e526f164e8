"""``edgekit export`` and ``edgekit verify``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgekit.cli import options as opt

console = Console()


def _split(levels: str) -> list[str]:
    return [q.strip() for q in levels.split(",") if q.strip()]


def export(
    model: str = opt.model_argument("Weights as safetensors."),
    fmt: str = typer.Option("gguf", "--format", "-f", help="gguf or onnx."),
    quant: str = opt.quant_option(
        None, "Comma-separated, e.g. F32,Q5_K_M,Q4_K_M or fp32,int4. Default: the target's ladder, else F16 / fp32."
    ),
    out: Path = opt.out_option(Path("export/models")),
    target: str = opt.target_option(detail="Its ladder and verification thresholds apply."),
    imatrix: str = typer.Option(
        "auto", "--imatrix", help="auto (compute from --calibration text), none, or an imatrix file."
    ),
    calibration: Path = opt.calibration_option("For the importance matrix."),
    tensor_type: list[str] = typer.Option(
        [],
        "--tensor-type",
        help="GGUF per-tensor type override PATTERN=TYPE (regex on GGUF tensor names), e.g. '^output\\.weight$=Q8_0'. Repeatable.",
    ),
    allocate: str = typer.Option(
        "auto",
        "--allocate",
        help="GGUF tensor types: auto/measure/fisher (chosen per tensor from measured sensitivity, within each level's size) or none (llama.cpp's own mix).",
    ),
    bpw: str = typer.Option(
        None, "--bpw", help="GGUF: also one file per bits-per-weight target, e.g. 3.5,4,4.5,5 (sensitivity-allocated)."
    ),
    block_size: int = typer.Option(
        None, "--block-size", help="ONNX int4/int8: weights per scale (16..256). Default: the target's, else 32."
    ),
    onnx_route: str = typer.Option(
        "genai",
        "--onnx-route",
        help="genai: ONNX Runtime GenAI package (onnxruntime-genai's builder); optimum: optimum-onnx graph (needs the optimum extra).",
    ),
    onnx_provider: str = typer.Option(
        None,
        "--onnx-provider",
        help="Execution provider the ONNX package targets: cpu, cuda, dml, webgpu, trt-rtx. Default: the target's, else cpu.",
    ),
    int4_algo: str = typer.Option(
        None, "--int4-algo", help="ONNX int4/int8 quantizer: rtn, k_quant or default. Default: the target's, else rtn."
    ),
    accuracy_level: int = typer.Option(
        None,
        "--accuracy-level",
        help="ONNX int4/int8 compute type: 1 fp32, 2 fp16, 3 bf16, 4 int8 activations. Default: the target's, else the builder's.",
    ),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Verify every file against PyTorch after export."),
    ignore_resources: bool = opt.ignore_resources_option(),
    revision: str = opt.revision_option(),
    cache_dir: Path = opt.cache_dir_option(),
    trust_remote_code: bool = opt.trust_remote_code_option(),
    dtype: str = opt.dtype_option(),
) -> None:
    """Export a model to GGUF or ONNX at one or more quantization levels, then verify each file.

    GGUF K-quants (Q4_K_M, Q5_K_M, ...) use an importance matrix computed in PyTorch from calibration text. Every file gets a JSON sidecar with its sha256, source, quantization, imatrix provenance and verification results. Exits 3 if a file fails verification.
    """
    from edgekit.pipeline.teacher import resolve_teacher
    from edgekit.targets import load_target

    if fmt not in ("gguf", "onnx"):
        raise typer.BadParameter(f"unknown format {fmt!r}; use gguf or onnx", param_hint="--format")
    _check_allocate(allocate, _bits_per_weight(bpw) if bpw else [], fmt)  # before any loading
    from edgekit.loading import using

    profile = load_target(target) if target else None
    overrides = _overrides(tensor_type, profile)
    load = opt.load_options(revision, cache_dir, trust_remote_code, dtype)
    with using([model], load):
        ref = resolve_teacher(model, trust_remote_code)
    with using([model, ref.path], load):
        # before any work: refuse with the numbers, or leave out the allocation, to fit this machine
        allocate = _check_resources(ref.path, fmt, quant, profile, imatrix, allocate, bpw, verify, out,
                                    ignore_resources)  # fmt: skip
        onnx = (onnx_route, _onnx_options(profile, onnx_provider, int4_algo, block_size, accuracy_level))
        _export(ref, fmt, quant, out, profile, imatrix, calibration, overrides, onnx, verify, allocate, bpw)


def _export(ref, fmt, quant, out, profile, imatrix, calibration, overrides, onnx, verify, allocate, bpw) -> None:
    """``onnx``: (route, BuilderOptions) for ONNX exports."""
    model = Path(ref.path)
    targets = _bits_per_weight(bpw) if bpw else []
    _check_allocate(allocate, targets, fmt)
    levels = _levels(fmt, quant, profile, targets)
    if fmt == "gguf":
        from edgekit.export.gguf import export_gguf

        if profile and not profile.export.imatrix:
            imatrix = "none"
        calib = _calibration_rows(model, calibration) if calibration else None
        paths = export_gguf(
            model,
            out,
            levels,
            name=ref.name,  # "edgekit-demo-llama" for the demo, else the folder's name
            imatrix=None if imatrix == "none" else imatrix,
            calibration_ids=calib,
            calibration_source=str(calibration) if calibration else None,
            type_overrides=overrides,
            allocate=None if allocate == "none" else allocate,
            bpw=targets,
        )
        from edgekit.export.sidecar import read_sidecar

        levels = levels + [read_sidecar(p)["quantization"] for p in paths[len(levels) :]]  # their gates
    else:
        from edgekit.export.onnx import export_onnx

        route, options = onnx
        paths = export_onnx(model, out, levels, route=route, options=options, block_size=options.block_size)
    for path in paths:
        console.print(f"[green]wrote[/] {path}")
    if verify:
        tokens = profile.verify.heldout_tokens if profile else 1024
        _verify_all(paths, model, profile, levels, tokens)


def _levels(fmt: str, quant: str | None, profile, targets: list[float]) -> list[str]:
    """The levels to export: --quant, else the target's ladder, else F16 (GGUF) / fp32 (ONNX)."""
    levels = _split(quant) if quant else (profile.ladder(fmt) if profile else [])
    return levels or ([] if targets else ["F16"] if fmt == "gguf" else ["fp32"])


def _check_resources(model, fmt, quant, profile, imatrix, allocate, bpw, verify, out, ignore) -> str:
    """Estimate every phase's memory and disk (``edgekit.resources``) against this machine; refuse with
    the numbers, or return ``none`` for ``allocate`` when only the sensitivity allocation does not fit."""
    from dataclasses import replace

    from edgekit import resources
    from edgekit.errors import InputError
    from edgekit.formats import LEVELS
    from edgekit.models import load_config
    from edgekit.pipeline.preflight_resources import check, this_machine

    config = load_config(model)
    levels = _levels(fmt, quant, profile, _bits_per_weight(bpw) if bpw else [])
    if unknown := [q for q in levels if q not in LEVELS]:  # the same one-line refusal the export gives
        raise InputError(model, f"unknown {fmt.upper()} level(s) {', '.join(unknown)}; known: {', '.join(LEVELS)}")
    tokens = (profile.verify.heldout_tokens if profile else 1024) if verify else None
    if fmt == "gguf":
        no_imatrix = imatrix == "none" or (profile and not profile.export.imatrix)
        plan = resources.gguf_export(
            config, levels, imatrix_used=not no_imatrix, allocate=allocate, verify_tokens=tokens,
        )  # fmt: skip
        if bpw:  # bits-per-weight files are made by the allocation: it cannot be left out
            plan.phases[:] = [replace(e, optional=False) for e in plan.phases]
    else:
        plan = resources.onnx_export_all(config, levels)
        if tokens:
            plan.phases.append(resources.verify_reference(config, tokens))
    decision = check("export", plan.phases, this_machine(Path(out)), disk_bytes=plan.disk_bytes, out=out,
                     ignore=ignore)  # fmt: skip
    for note in decision.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    return "none" if any(s.endswith("allocation") for s in decision.left_out) else allocate


def _onnx_options(profile, provider: str | None, algo: str | None, block_size: int | None, accuracy: int | None):
    """The target's [export.onnx] settings (else the defaults) with the command line's flags on top."""
    from dataclasses import replace

    from edgekit.export.onnx_genai import BuilderOptions

    options = profile.export.onnx.builder_options() if profile else BuilderOptions()
    flags = {"provider": provider, "int4_algo": algo, "block_size": block_size, "accuracy_level": accuracy}
    return replace(options, **{k: v for k, v in flags.items() if v is not None})


def _bits_per_weight(text: str) -> list[float]:
    """--bpw 3.5,4,4.5 -> [3.5, 4.0, 4.5]; each between 2 and 16."""
    try:
        values = [float(v) for v in _split(text)]
    except ValueError:
        raise typer.BadParameter(f"expected numbers like 3.5,4,4.5, got {text!r}", param_hint="--bpw") from None
    bad = [v for v in values if not 2.0 <= v <= 16.0]
    if bad or not values:
        raise typer.BadParameter("bits per weight must lie between 2 and 16", param_hint="--bpw")
    return values


def _check_allocate(allocate: str, targets: list[float], fmt: str) -> None:
    from edgekit.export.mix import ALLOCATE_METHODS

    if allocate not in (*ALLOCATE_METHODS, "none"):
        raise typer.BadParameter(f"{allocate!r}; use {', '.join(ALLOCATE_METHODS)} or none", param_hint="--allocate")
    if targets and (fmt != "gguf" or allocate == "none"):
        raise typer.BadParameter(
            "needs --format gguf and a sensitivity allocation (not --allocate none)", param_hint="--bpw"
        )


def _overrides(pairs: list[str], profile) -> dict[str, str]:
    """--tensor-type PATTERN=TYPE options (after the profile's keep_output_tensor) as a dict."""
    from edgekit.errors import ConfigError, Problem
    from edgekit.export.quantize import keep_output_overrides

    overrides = keep_output_overrides(profile.export.keep_output_tensor if profile else None)
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise ConfigError([Problem("--tensor-type", p, "expected PATTERN=TYPE, e.g. output=Q8_0") for p in bad])
    for pair in pairs:
        pattern, _, type_name = pair.rpartition("=")
        overrides[pattern] = type_name
    return overrides


def _calibration_rows(model: Path, calibration: Path):
    from edgekit.data import load_texts, pack, tokenize_documents
    from edgekit.models import load_tokenizer

    return pack(tokenize_documents(load_tokenizer(model), load_texts(calibration)), 256, 64)


def _verify_all(paths, reference: Path, profile, levels: list[str], tokens: int) -> None:
    """Verify every exported file against one reference pass (the model loaded once, then released)."""
    from edgekit.errors import NativeCrash, VerificationError
    from edgekit.export.reference import reference_for
    from edgekit.export.verify import reject_artifact, verify_artifact

    table = Table(title="verification against PyTorch fp32")
    for col in ("artifact", "level", "mean KL", "top-1", "ppl change", "tokenizer", "runtime s", "result"):
        table.add_column(col)
    failed, crashed = [], []
    with reference_for(reference, max_tokens=tokens, workdir=Path(paths[0]).parent if paths else None) as ref:
        for path, level in zip(paths, levels, strict=True):
            threshold = profile.verify.threshold(level) if profile else None
            try:
                r = verify_artifact(path, reference, level=level, threshold=threshold, prepared=ref)
            except NativeCrash as exc:  # the runtime died on the file (in a child process): a failure
                crashed.append(f"{exc}; moved to {reject_artifact(path)}")
                table.add_row(Path(path).name, level, "-", "-", "-", "-", "-", "[red]CRASH[/]")
                continue
            table.add_row(
                Path(path).name,
                level,
                f"{r.mean_kl:.2e}",
                f"{r.top1:.3f}",
                f"{r.ppl_change:+.2%}",
                "ok" if r.tokenizer_parity else "MISMATCH",
                f"{r.runtime_seconds:.1f}",
                "[green]pass[/]" if r.passed else "[red]FAIL[/]",
            )
            if not r.passed:
                failed.append(r)
        table.caption = f"reference pass (PyTorch, once for all files): {ref.seconds:.1f} s"
    console.print(table)
    if failed or crashed:  # nothing that failed stays under its final name
        moved = [f"{r.artifact} failed; moved to {reject_artifact(r.artifact)}\n{r.table()}" for r in failed]
        raise VerificationError(
            f"{len(failed) + len(crashed)} of {len(paths)} files failed verification", "\n\n".join(crashed + moved)
        )


def verify(
    artifact: Path = typer.Argument(..., help="A .gguf file or an ONNX folder."),
    reference: Path = opt.reference_option(required=True),
    target: str = opt.target_option(detail="Its thresholds apply."),
    level: str = opt.quant_option(None, "Default: from the sidecar."),
    tokens: int = typer.Option(
        None, "--heldout-tokens", help="Held-out tokens to compare (default: the target's, else 1024)."
    ),
    revision: str = opt.revision_option(),
    cache_dir: Path = opt.cache_dir_option(),
    trust_remote_code: bool = opt.trust_remote_code_option(),
    dtype: str = opt.dtype_option(),
) -> None:
    """Check an exported artifact against the PyTorch model it came from (exit 3 with a table on failure).

    Runs the artifact in its own runtime on held-out text: mean KL, top-1 agreement and perplexity change against the fp32 model, and token ids on a stress set against the Hugging Face tokenizer. Thresholds per level come from --target, else edgekit's defaults. The result is recorded in the artifact's sidecar.
    """
    from edgekit.errors import InputError
    from edgekit.export.verify import verify_artifact
    from edgekit.loading import using
    from edgekit.targets import load_target

    if not artifact.exists():
        raise InputError(artifact, "artifact not found")
    profile = load_target(target) if target else None
    threshold = profile.verify.threshold if profile else None
    tokens = tokens or (profile.verify.heldout_tokens if profile else 1024)
    with using([reference], opt.load_options(revision, cache_dir, trust_remote_code, dtype)):
        report = verify_artifact(artifact, reference, level=level, threshold=threshold, max_tokens=tokens, check=True)
    console.print(report.table())
    console.print(f"[green]passed[/] {artifact} ({report.level}, {report.tokens} tokens, {report.backend})")
    console.print(f"reference pass {report.reference_seconds:.1f} s, runtime {report.runtime_seconds:.1f} s")


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``verify`` to the CLI."""
    app.command("export", cls=opt.Command)(export)
    app.command("verify", cls=opt.Command)(verify)
