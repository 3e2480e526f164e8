"""``edgekit plan``: what fits a device, how fast it should run, and which lever to pull."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from edgekit.cli import options as opt

console = Console()
JSON_SCHEMA_VERSION = 1  # bump when a key of the --json output changes meaning or disappears


def _config(model: str, trust_remote_code: bool):
    if model == "demo":
        from edgekit.demo import demo_config

        return demo_config()
    from edgekit.models import check_architecture, load_config

    config = load_config(model, trust_remote_code=trust_remote_code)
    check_architecture(config, model)
    return config


def _check_options(quality_budget, gpu, context, tokens, topk, compute_budget) -> str:
    """Every bad option at once (ConfigError); returns the canonical GPU class name."""
    from edgekit.advisor import check_quality_budget
    from edgekit.costs import gpu_class
    from edgekit.errors import ConfigError, Problem

    problems = []
    for check, value in ((check_quality_budget, quality_budget), (gpu_class, gpu)):
        try:
            check(value)
        except ConfigError as exc:
            problems += exc.problems
    for name, value, minimum in (("--context", context, 1), ("--tokens", tokens, 1), ("--topk", topk, 1)):
        if value is not None and value < minimum:
            problems.append(Problem(name, "", f"{value:g} must be at least {minimum}"))
    if compute_budget is not None and compute_budget < 0:
        problems.append(Problem("--compute-budget", "", f"{compute_budget:g} GPU-hours must not be negative"))
    if problems:
        raise ConfigError(problems)
    return gpu_class(gpu)


def plan(
    target: str = opt.target_option(required=True),
    model: str = opt.model_option("demo", "Only its config is read, no weights."),
    context: int = opt.context_option("For the KV cache (default: the target's)."),
    quality_budget: str = typer.Option(
        "moderate", "--quality-budget", help="low | moderate | any: the quantization levels the advice may use."
    ),
    compute_budget: float = typer.Option(
        None, "--compute-budget", help="GPU-hours you can spend; prune/distill options say if they fit in it."
    ),
    gpu: str = typer.Option(
        "H100", "--gpu-class", help="GPU class the GPU-hours are priced for: H100, A100, L4, RTX4090."
    ),
    tokens: float = typer.Option(
        None, "--tokens", help="Training tokens for distillation/recovery (default: 20 per student parameter)."
    ),
    topk: int = opt.topk_option("For its disk estimate."),
    seq_kd: bool = opt.seq_kd_option("Its cost is included."),
    measurements: Path = typer.Option(
        None, "--measurements", help="A bench results.json for this model: measured sizes (and speeds on-device)."
    ),
    write_student: Path = typer.Option(
        None, "--write-student", help="Write the suggested student's config.json here (for edgekit distill --student)."
    ),
    revision: str = opt.revision_option(),
    cache_dir: Path = opt.cache_dir_option(),
    trust_remote_code: bool = opt.trust_remote_code_option(),
    as_json: bool = opt.json_option("schema_version 1, see docs/decision-guide.md."),
) -> None:
    """Per quantization level: file size, KV cache, fit in the memory budget, and predicted decode speed; then the cheapest path (quantize, prune + recover, or distill) that meets the budget, with a cost estimate.

    Speeds are predictions calibrated on published runs of the device class (the fraction of memory bandwidth the runtime reaches ÷ bytes read per token; the profile's [calibration]), shown with their range, unless --measurements holds on-device figures. No weights are loaded.
    """
    from edgekit.advisor import CostSettings, advise
    from edgekit.targets import load_target

    gpu = _check_options(quality_budget, gpu, context, tokens, topk, compute_budget)
    profile = load_target(target)
    from edgekit.loading import using

    with using([model], opt.load_options(revision, cache_dir, trust_remote_code)):
        config = _config(model, trust_remote_code)
    results = None
    if measurements:
        from edgekit.measured import read_measurements

        results = read_measurements(measurements, model)
    advice = advise(
        config,
        profile,
        quality_budget=quality_budget,
        context=context,
        costs=CostSettings(gpu, tokens, topk, seq_kd, compute_budget),
        measurements=results,
        model=model,
    )
    if write_student:
        _write_student(config, advice, write_student)
    stages = _resource_estimates(config, profile)
    if as_json:
        meta = {
            "schema_version": JSON_SCHEMA_VERSION,
            "target": profile.name,
            "model": model,
            "context": context or profile.budget.context_length,
            "quality_budget": quality_budget,
            "compute_budget_gpu_hours": compute_budget,
        }
        resources = {"resources": [e.to_dict() for e in stages]}
        typer.echo(json.dumps({**meta, **advice.to_dict(), **resources}, indent=2))
        return
    _print(profile, model, advice, context or profile.budget.context_length)
    _print_resources(stages)
    if write_student:
        console.print(f"student config written to {write_student}/config.json")


def _resource_estimates(config, profile) -> list:
    """Peak memory and disk of each stage on this model (``edgekit.resources``), the export's phases in full."""
    import copy

    from edgekit import resources

    student = copy.deepcopy(config)
    student.num_hidden_layers = max(1, config.num_hidden_layers // 2)  # edgekit distill's default student
    context = profile.budget.context_length
    stages = [resources.distill_step(config, student), resources.prune(config)]
    if levels := profile.ladder("gguf"):
        stages += resources.gguf_export(config, levels, imatrix_used=profile.export.imatrix, context=context).phases
    if levels := profile.ladder("onnx"):
        stages += resources.onnx_export_all(config, levels).phases
    return stages + [resources.bench(config, q, context) for fmt in ("gguf", "onnx") for q in profile.ladder(fmt)]


def _print_resources(stages) -> None:
    """What each stage needs on the machine that runs it, and what this machine has now."""
    from edgekit.pipeline.preflight_resources import this_machine

    machine = this_machine(Path("."))
    table = Table(title="memory and disk each stage needs on the build machine", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("stage", "peak memory", "disk", "largest term"):
        table.add_column(col, justify="right" if col in ("peak memory", "disk") else "left")
    for e in stages:
        top = max(e.memory, key=lambda t: t.bytes)
        table.add_row(e.stage, _size(e.memory_bytes), _size(e.disk_bytes) if e.disk else "-", top.what.split(" (")[0])
    console.print(table)
    if machine.memory_available is not None:
        console.print(
            Padding(Text(f"this machine: {_size(machine.memory_available)} memory available ({machine.memory_source}), "
                         f"{_size(machine.disk_free or 0)} free disk here"), (0, 0, 1, 1))
        )  # fmt: skip


def _write_student(config, advice, folder: Path) -> None:
    """Save the distill option's student config (random init happens in edgekit distill)."""
    from edgekit.errors import InputError
    from edgekit.fileio import atomic_path
    from edgekit.students import student_config

    option = next((o for o in advice.options if o.path == "distill"), None)
    if option is None:
        raise InputError(folder, f"no student to write: the advice is {advice.choice!r}, not a distillation")
    with atomic_path(folder) as tmp:
        student_config(config, option.student).save_pretrained(tmp)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def _size(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def _print(profile, model: str, advice, context: int) -> None:
    from edgekit.advisor import level_speed_text, meets

    b = profile.budget
    params = advice.levels[0].params if advice.levels else 0
    measured = advice.basis == "measured"
    notes = {lv.format: lv.speed_note for lv in advice.levels if lv.basis != "measured"}
    speed_note = "tokens/s: central figure (range)"
    for fmt, note in notes.items():  # GGUF (llama.cpp) and ONNX (ONNX Runtime GenAI) can be calibrated apart
        speed_note += f"; {fmt + ' ' if len(notes) > 1 else ''}predicted: {note}"
    if any(lv.basis == "measured" for lv in advice.levels):
        speed_note += "; measured on the device where basis says measured"
    table = Table(
        title=f"{model} ({params / 1e6:,.1f}M parameters) on {profile.name}",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    columns = ["level", "file MiB", "KV MiB", "total MiB", "fits", "decode tokens/s", "meets"] + (
        ["basis"] if measured else []
    )
    for col in columns:
        table.add_column(col, justify="left" if col in ("level", "basis") else "right", no_wrap=True)
    for lv in advice.levels:
        row = [
            lv.level,
            _mib(lv.file_bytes),
            _mib(lv.kv_bytes),
            _mib(lv.total_bytes),
            "yes" if lv.fits else "[red]no[/]",
            level_speed_text(lv),
            "[green]yes[/]" if meets(lv, profile) else "[red]no[/]",
        ]
        table.add_row(*row, *([lv.basis] if measured else []))
    console.print(table)
    limits = (
        f"budget {b.memory_mb:,.0f} MiB, at least {b.min_decode_tokens_per_s:g} tokens/s, "
        f"{profile.hardware.memory_bandwidth_gbs:g} GB/s, context {context:,}; {speed_note}"
    )
    console.print(Padding(Text(limits), (0, 0, 1, 1)))
    console.print(f"[bold]strategy: {advice.choice}[/]")
    for i, option in enumerate(advice.options):
        _print_option(option, recommended=i == 0 and advice.choice != "none")


def _print_option(option, recommended: bool) -> None:
    mark = "→ recommended:" if recommended else "· or:" if option.meets_budget else "· not enough:"
    console.print(f" {mark} [bold]{option.path}[/] at {option.level}", highlight=False)
    lines = [option.reason, f"quality (literature): {option.quality}"]
    if option.cost:
        c = option.cost
        others = ", ".join(f"{k} {v:,.0f}" for k, v in c["gpu_hours_by_class"].items() if k != c["gpu"])
        flops = c["teacher_flops"] + c["generation_flops"] + c["student_flops"]
        parts = f"teacher {c['teacher_flops']:.2e}" + (
            f", generation {c['generation_flops']:.2e}" if c["generation_flops"] else ""
        )
        lines += [
            f"cost: {c['tokens'] / 1e9:,.1f}B tokens ({c['tokens_per_param']:,.1f} per parameter), "
            f"{flops:.2e} FLOPs ({parts}, student {c['student_flops']:.2e})",
            f"≈ {c['gpu_hours']:,.0f} {c['gpu']} GPU-hours at {c['mfu']:.0%} MFU ({others})",
            f"top-{c['topk']} teacher cache for all tokens: {_size(c['cache_bytes'])}",
        ]
    if option.next_step:
        lines.append(f"next: {option.next_step}")
    for line in lines:
        console.print(Padding(Text(line), (0, 0, 0, 5)))


def register(app: typer.Typer) -> None:
    """Add ``plan`` to the CLI."""
    app.command("plan", cls=opt.Command)(plan)
