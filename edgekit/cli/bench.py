"""``edgekit bench``: measure artifacts (or a target's whole quantization ladder) and recommend a level."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from edgekit.cli import options as opt

console = Console()


def bench(
    artifacts: list[Path] = typer.Argument(None, help="GGUF files or ONNX folders to measure."),
    suite: str = typer.Option(
        "quick",
        "--suite",
        "-s",
        help="quick | full | quant-sweep | target (the --target profile's [bench] settings), or a suite .toml.",
    ),
    target: str = opt.target_option(detail="Threads, memory budget and speed floor come from it."),
    model: str = opt.reference_option(detail="With quant-sweep, the model whose ladder is exported."),
    teacher: str = opt.teacher_option(),
    out: Path = opt.out_option(Path("export/bench"), "results.json and the report go there."),
    limit: bool = typer.Option(
        False,
        "--limit/--no-limit",
        help="Hold each run to the target's threads and memory budget (mobile-class setting); a model that does not fit is reported, not fatal.",
    ),
    on_device: bool = typer.Option(
        False,
        "--on-device",
        help="This host is the target device: recommend from measured speed instead of the roofline prediction.",
    ),
    device: str = opt.device_option(
        "cpu", "cuda offloads all llama.cpp layers, uses ONNX Runtime's CUDA provider and records GPU memory."
    ),
    ssh: str = typer.Option(
        None,
        "--ssh",
        help="Measure on a real device: user@host with edgekit installed; artifacts are pushed, results pulled back.",
    ),
    ssh_port: int = typer.Option(22, "--ssh-port", help="SSH port of --ssh."),
    ssh_key: Path = typer.Option(None, "--ssh-key", help="Private key for --ssh."),
    remote_python: str = typer.Option("python3", "--remote-python", help="Python on the device that has edgekit."),
    revision: str = opt.revision_option(),
    cache_dir: Path = opt.cache_dir_option(),
    trust_remote_code: bool = opt.trust_remote_code_option(),
    dtype: str = opt.dtype_option(),
) -> None:
    """Measure load time, peak memory, time to first token, prefill and decode tokens/s and quality; write results.json and an HTML/Markdown report; recommend a level for the target.

    With --suite quant-sweep --target NAME --reference DIR, the target's ladder is exported first (with an importance matrix) and every level is measured. With --ssh user@host the measurements run on that device (edgekit installed there) and the recommendation uses its measured speed; otherwise speed on the target is predicted from its memory bandwidth, and the report says which.
    """
    from edgekit.loading import using
    from edgekit.pipeline.teacher import resolve_teacher
    from edgekit.targets import load_target

    gpu = _gpu(device)
    load = opt.load_options(revision, cache_dir, trust_remote_code, dtype)
    profile = load_target(target) if target else None
    with using([model, teacher], load):
        reference = resolve_teacher(model, trust_remote_code).path if model else None
        teacher_path = resolve_teacher(teacher, trust_remote_code).path if teacher else None
    with using([model, teacher, reference, teacher_path], load):
        _bench(artifacts, suite, profile, reference, teacher_path, out, limit, on_device, gpu, ssh, ssh_port, ssh_key,
               remote_python)  # fmt: skip


def _gpu(device: str) -> bool:
    """--device as the harness's switch: cuda offloads; auto does when CUDA is there."""
    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter(f"{device!r} is not one of auto, cpu, cuda", param_hint="--device")
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device == "cuda"


def _bench(artifacts, suite, profile, model, teacher, out, limit, on_device, gpu, ssh, ssh_port, ssh_key,
           remote_python) -> None:  # fmt: skip
    from edgekit.bench import recommend, run_suite, write_report
    from edgekit.bench.suites import load_suite

    spec = load_suite(suite, profile)
    paths = list(artifacts or [])
    if spec.export_ladder:
        if profile is None or model is None:
            raise typer.BadParameter("quant-sweep needs --target and --reference", param_hint="--suite")
        if gpu:  # before minutes of export, not after
            from edgekit.bench.gpu import require_cuda

            require_cuda("gguf", model)
        from edgekit.bench.harness import export_ladder

        paths += export_ladder(model, profile, out / "artifacts")
    if not paths:
        raise typer.BadParameter(
            "give artifacts to measure, or --suite quant-sweep with --reference", param_hint="ARTIFACTS"
        )
    from edgekit.bench.runners import Remote

    remote = (
        Remote(ssh, port=ssh_port, identity=str(ssh_key) if ssh_key else None, python=remote_python)
        if ssh is not None  # an empty --ssh is a mistake to report, not a request to measure here
        else None
    )
    results = run_suite(
        paths,
        suite,
        target=profile,
        reference_model=model,
        teacher_model=teacher,
        out_dir=out,
        limit_to_target=limit,
        gpu=gpu,
        remote=remote,
    )
    if profile is not None:  # a run over SSH is on the device: its measured speed decides
        results["recommendation"] = recommend(results, profile, on_device=on_device or remote is not None)
    from edgekit.fileio import write_json_atomic

    write_json_atomic(out / "results.json", results)
    md, page = write_report(results, out)
    _summary(results)
    console.print(f"[green]results[/] {out / 'results.json'}\n[green]report[/] {page} and {md.name}")


def _summary(results: dict) -> None:
    """The recommendation and one line per artifact; the full tables are in the report."""
    from rich.table import Table

    from edgekit.bench.report import QUALITY_COLUMNS, speed_columns

    columns = speed_columns(results)
    speed = {h: c for h, c in columns}
    decode = next(h for h, _ in columns if "p10–p90" in h)  # "tg128 (tok/s, p10–p90)"
    predicted = next((h for h, _ in columns if h.endswith("predicted (tok/s)")), None)
    kl = dict(QUALITY_COLUMNS)["KL vs fp (nats/tok)"]
    table = Table("level")
    headers = ["file MiB", "peak RSS MiB", f"host {decode}", "KL vs fp", "roofline"] + (
        [predicted] if predicted else []
    )
    for header in headers:
        table.add_column(header, justify="right")
    for r in results["results"]:
        if r.get("error"):
            table.add_row(r.get("quant") or Path(r["artifact"]).name, f"[red]{r['error']}[/]")
            continue
        cells = [speed[h](r) for h in ("level", "file (MiB)", "peak RSS (MiB)", decode)]
        table.add_row(*cells, kl(r), speed["roofline fraction"](r), *([speed[predicted](r)] if predicted else []))
    console.print(table)
    rec = results.get("recommendation")
    if rec:
        head = f"[bold green]Recommended: {rec['quant']}[/]" if rec["quant"] else "[bold yellow]No recommendation[/]"
        console.print(f"{head} ({rec['basis']} speed). {rec['reason']}.")


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the CLI."""
    app.command("bench", cls=opt.Command)(bench)
