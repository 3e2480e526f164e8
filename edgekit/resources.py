"""Peak memory and disk each stage needs, estimated from the model's config before any work starts.

Every figure is a sum of named terms (``Term``) so that ``edgekit plan`` and a refusal can say what
the number is made of, and ``bench/bench_sizes.py`` can set each estimate beside a measured peak
(process tree RSS) and report the ratio. Shapes and parameter counts come from
``edgekit.arch.shapes`` (the arithmetic ``plan`` uses); the constants below are the rest, one
commented line each. The estimates describe the bounded-memory code paths: the model resident in
its source precision (bf16), float32 one decoder layer at a time, a streaming GGUF writer, the
reference logits computed once per export and the fp model released before a runtime child opens
an artifact.

Memory terms are resident bytes of the whole process tree at the stage's peak, including pages of
memory-mapped files the stage reads (they count in RSS until unmapped, though the kernel can
reclaim them). Disk terms are bytes written under the output folder, temporary files included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from edgekit.arch import family_of
from edgekit.arch import shapes as arch_shapes
from edgekit.formats import level as level_info

GiB = 2**30
# Measured or stated inputs of the formulas (bytes unless said otherwise).
CONST = {
    "python_base": int(0.82 * GiB),  # RSS of Python with edgekit's CLI, torch, transformers, llama_cpp (measured)
    "fp32": 4,  # bytes per float32 value (activations, logits, one layer upcast, optimizer state)
    "fp64": 8,  # bytes per float64 value (the allocation probe's log-softmax)
    "resident": 2,  # bytes per weight of the model held in memory (bf16, the checkpoints' own precision)
    "base_file": 2,  # bytes per weight of the intermediate GGUF the quantizer reads (the checkpoint's BF16)
    "probe_base_file": 4,  # ... F32 when the sensitivity probe runs (it reads an F32 base)
    "chunk_elements": 1 << 24,  # elements the streaming writer converts at a time (gguf_stream.CHUNK_ELEMENTS)
    "convert_copies": 3,  # float32 copies of one block while it is converted (read, transformed, encoded)
    "quantize_copies": 2,  # float32 copies of one tensor inside llama.cpp's quantizer (dequantized + work)
    "imatrix_rows": 16,  # calibration rows of the importance matrix (edgekit.export.gguf default)
    "seq": 256,  # tokens per calibration / verification row
    "batch": 4,  # rows per forward pass of the importance matrix and the allocation probe
    "probe_tokens": 1024,  # tokens the allocation probe's reference log-probs hold (sensitivity.MEASURE_TOKENS)
    "probe_files_bytes": 6.7,  # bytes/weight of the probe's candidate files (mix.CANDIDATE_BYTES_PER_WEIGHT)
    "fisher_bytes": 8,  # bytes/weight the Fisher probe holds: fp32 weights + fp32 sums (mix.FISHER_BYTES_PER_WEIGHT)
    "auto_max_weights": 100_000_000,  # allocate=auto probes only models up to this (mix.AUTO_MAX_WEIGHTS)
    "activation_widths": 4,  # [tokens, hidden]-sized float32 tensors alive in one layer's forward
    "ffn_widths": 3,  # [tokens, ffn]-sized float32 tensors alive in one MLP's forward (gate, up, product)
    "adamw_bytes": 16,  # per student weight in training: fp32 weight, gradient, two AdamW moments
    "logit_copies": 4,  # [batch, seq, vocab] float32 tensors alive in a distillation step (t, s, softmax, grad)
    "saved_widths": 12,  # [tokens, hidden] float32 values a layer saves for backward (attn + MLP inputs)
    "runtime_child_base": int(0.1 * GiB),  # RSS of the runtime child: Python, numpy, llama_cpp, no torch (measured)
    "runtime_compute": 64 * 2**20,  # llama.cpp context, graph and scratch buffers (edgekit.plan)
}


@dataclass(frozen=True)
class Term:
    """One part of an estimate: what it is, and its size in bytes."""

    what: str
    bytes: int


@dataclass(frozen=True)
class Estimate:
    """A stage's peak memory (process tree RSS) and the disk it writes, each as a sum of terms."""

    stage: str  # "export: imatrix", "verify Q4_K_M", "prune", ...
    memory: tuple[Term, ...]
    disk: tuple[Term, ...] = ()
    optional: bool = False  # the stage can be left out (a bounded path) instead of refusing the run

    @property
    def memory_bytes(self) -> int:
        return sum(t.bytes for t in self.memory)

    @property
    def disk_bytes(self) -> int:
        return sum(t.bytes for t in self.disk)

    def formula(self) -> str:
        """``a GiB (what) + b GiB (what) ...``: the terms of the memory figure."""
        return " + ".join(f"{t.bytes / GiB:.2f} GiB {t.what}" for t in self.memory if t.bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "memory_bytes": self.memory_bytes,
            "disk_bytes": self.disk_bytes,
            "memory_terms": {t.what: t.bytes for t in self.memory},
            "disk_terms": {t.what: t.bytes for t in self.disk},
            "optional": self.optional,
        }


@dataclass(frozen=True)
class Sizes:
    """The config's numbers the formulas use (elements, not bytes)."""

    params: int
    layer: int  # one decoder layer
    largest: int  # the largest tensor
    hidden: int
    ffn: int
    vocab: int
    layers: int

    @classmethod
    def of(cls, config: Any) -> Sizes:
        family = family_of(config)
        return cls(
            arch_shapes.count_params(family, config),
            arch_shapes.layer_params(family, config),
            arch_shapes.largest_tensor_params(family, config),
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
            config.num_hidden_layers,
        )


def _base() -> Term:
    return Term("Python, torch and transformers", CONST["python_base"])


def _model(s: Sizes) -> Term:
    return Term("weights in bf16", s.params * CONST["resident"])


def _layer_fp32(s: Sizes) -> Term:
    """edgekit.lowmem upcasts one unit at a time: a decoder layer, or a block of the output head's rows
    (``lowmem.CHUNK_ELEMENTS``; the embedding upcasts only the rows it looks up)."""
    return Term("one layer (or head block) in fp32", max(s.layer, CONST["chunk_elements"]) * CONST["fp32"])


def _activations(s: Sizes, tokens: int) -> Term:
    widths = CONST["activation_widths"] * s.hidden + CONST["ffn_widths"] * s.ffn
    return Term(f"activations of {tokens:,} tokens", tokens * widths * CONST["fp32"])


def _logits(tokens: int, s: Sizes, what: str = "logits", size: int = CONST["fp32"]) -> Term:
    return Term(f"{what} ({tokens:,} tokens × {s.vocab:,} vocab × {size})", tokens * s.vocab * size)


def file_bytes(config: Any, level: str) -> int:
    """Size of one exported file: parameters × the level's bits per weight ÷ 8 (as ``plan``)."""
    return int(Sizes.of(config).params * level_info(level).bits_per_weight / 8)


def gguf_write(config: Any, resident: bool = False) -> Estimate:
    """Streaming writer: each tensor read from the checkpoint and converted a block of rows at a time
    (a rotary-permuted q/k whole); the model stays resident meanwhile when the imatrix or probe needs it."""
    s = Sizes.of(config)
    family = family_of(config)
    whole = max(math.prod(shape) for name, shape in arch_shapes.layer_shapes(family, config).items() if "q" in name)
    block = min(max(CONST["chunk_elements"], whole), s.largest)
    return Estimate(
        "export: write",
        (
            _base(),
            *((_model(s),) if resident else ()),
            Term("one block converted in fp32", CONST["convert_copies"] * block * CONST["fp32"]),
        ),
        (Term("base file (temporary)", s.params * CONST["base_file"]),),
    )


def gguf_quantize(config: Any, level: str, base_bytes: int = CONST["base_file"]) -> Estimate:
    """llama.cpp's quantizer in process (the model released): one tensor at a time, read from the mapped
    base file and converted to fp32 with a work buffer of the same size. The rest of the mapping is
    clean file pages the kernel reclaims under pressure, so it is not counted (measured: llama.cpp's
    quantizer peaks at 1.9 GB on a 2.5 GB Llama-3.2-1B-shaped BF16 file, bench/results-gguf-writer.json)."""
    s = Sizes.of(config)
    return Estimate(
        f"export: quantize {level}",
        (
            _base(),
            Term("base file pages of the tensor in work", s.largest * base_bytes),
            Term("largest tensor in fp32 with its work buffer", CONST["quantize_copies"] * s.largest * CONST["fp32"]),
        ),
        (Term(f"{level} file", file_bytes(config, level)),),
    )


def imatrix(config: Any) -> Estimate:
    """Forward passes over the calibration rows with the model in bf16, computing in fp32 per layer."""
    s = Sizes.of(config)
    tokens = CONST["batch"] * CONST["seq"]
    return Estimate(
        "export: imatrix",
        (_base(), _model(s), _layer_fp32(s), _activations(s, tokens), _logits(tokens, s)),
    )


def allocation(config: Any, method: str = "fisher") -> Estimate:
    """Sensitivity probe: ``measure`` keeps reference log-probs and a batch's fp64 log-softmax; ``fisher``
    holds fp32 weights and sums; both read candidate files quantized from an F32 base."""
    s = Sizes.of(config)
    tokens = CONST["batch"] * CONST["seq"]
    if method == "measure":
        work = (
            _logits(CONST["probe_tokens"], s, "reference log-probs"),
            _logits(tokens, s, "batch log-softmax ×2", 2 * CONST["fp64"]),
        )
    else:
        work = (Term("Fisher: fp32 weights and sums", s.params * CONST["fisher_bytes"]), _logits(CONST["seq"], s))
    return Estimate(
        "export: allocation",
        (_base(), _model(s), _layer_fp32(s), _activations(s, tokens), *work),
        (
            Term("base file (temporary)", s.params * CONST["probe_base_file"]),
            Term("candidate quantized files (temporary)", int(s.params * CONST["probe_files_bytes"])),
        ),
        optional=True,
    )


def probes(config: Any, allocate: str | bool | None) -> str | None:
    """The probe an export runs: None (llama.cpp's mixes), ``measure`` or ``fisher``; ``auto`` probes
    only models up to ``auto_max_weights`` (as ``edgekit.export.mix.auto_fallback`` decides)."""
    if not allocate or allocate == "none":
        return None
    if allocate in ("auto", True):
        return "fisher" if Sizes.of(config).params <= CONST["auto_max_weights"] else None
    return str(allocate)


def verify(config: Any, level: str, tokens: int, context: int) -> Estimate:
    """One artifact's check, the fp model released: the reference logits and the child's logits mapped
    (read row by row), and the runtime child holding the file, its KV cache and buffers."""
    s = Sizes.of(config)
    family = family_of(config)
    return Estimate(
        f"verify {level}",
        (
            _base(),
            _logits(tokens, s, "reference + artifact logits mapped", 2 * CONST["fp32"]),
            Term("runtime child: Python", CONST["runtime_child_base"]),
            Term(f"runtime child: {level} file mapped", file_bytes(config, level)),
            Term("runtime child: KV cache", arch_shapes.kv_cache_bytes(family, config, context)),
            Term("runtime child: buffers", CONST["runtime_compute"] + _logits(CONST["seq"], s).bytes),
        ),
    )


def verify_reference(config: Any, tokens: int) -> Estimate:
    """The reference logits, once per export: the model in bf16, one unit in fp32, one row at a time
    written to a float32 .npy file (``edgekit.export.reference``)."""
    s = Sizes.of(config)
    return Estimate(
        "verify: reference logits",
        (_base(), _model(s), _layer_fp32(s), _activations(s, CONST["seq"]), _logits(CONST["seq"], s)),
        (Term("reference logits (.npy, temporary)", tokens * s.vocab * CONST["fp32"]),),
    )


def onnx_export(config: Any, level: str) -> Estimate:
    """ONNX Runtime GenAI builder (parent and child): the measured line of ``onnx_genai.BUILDER_PEAK``.

    The builder holds the torch model in the checkpoint's precision and, for int4/int8, the whole
    graph as one fp32 protobuf before quantizing, so its peak is a multiple of the checkpoint that
    edgekit cannot bound from outside; the multiple was measured at 0.25 B and 1.24 B weights.
    """
    from edgekit.export.onnx_genai import BUILDER_PEAK

    s = Sizes.of(config)
    out = file_bytes(config, level)
    fixed, per_byte = BUILDER_PEAK.get(level, BUILDER_PEAK["fp32"])
    checkpoint = s.params * CONST["resident"]
    return Estimate(
        f"onnx: {level}",
        (
            Term("builder and runtimes, fixed part (measured)", int(fixed)),
            Term(f"builder at {level}: {per_byte:g} x the bf16 checkpoint (measured)", int(per_byte * checkpoint)),
        ),
        (Term(f"{level} model", out),),
    )


def prune(config: Any, pruned_config: Any | None = None, rows: int = 16) -> Estimate:
    """Importance on calibration rows (bf16 model, fp32 per unit), then surgery layer by layer in the
    source dtype (the source layer freed as its pruned copy is made: no second full copy)."""
    s = Sizes.of(config)
    after = Sizes.of(pruned_config) if pruned_config is not None else s
    tokens = CONST["batch"] * CONST["seq"]
    return Estimate(
        "prune",
        (
            _base(),
            _model(s),
            _layer_fp32(s),
            _activations(s, tokens),
            _logits(tokens, s),
            Term("one pruned layer in fp32", after.layer * CONST["fp32"]),
        ),
        (Term("pruned model (bf16)", after.params * CONST["resident"]),),
    )


def distill_step(teacher_config: Any, student_config: Any, batch: int = 8, seq: int = 256) -> Estimate:
    """One training step: teacher in bf16 (forward only), student in fp32 with AdamW, full logits."""
    t, st = Sizes.of(teacher_config), Sizes.of(student_config)
    tokens = batch * seq
    saved = tokens * st.layers * CONST["saved_widths"] * st.hidden * CONST["fp32"]
    return Estimate(
        "distill step",
        (
            _base(),
            Term("teacher in bf16", t.params * CONST["resident"]),
            _layer_fp32(t),
            Term("student: weights, gradients, AdamW (fp32)", st.params * CONST["adamw_bytes"]),
            Term("student activations saved for backward", saved),
            _logits(tokens, st, f"logits ×{CONST['logit_copies']}", CONST["logit_copies"] * CONST["fp32"]),
        ),
        (
            Term("student model (fp32)", st.params * CONST["fp32"]),
            Term("checkpoint: weights + AdamW", st.params * 3 * CONST["fp32"]),
        ),
    )


def bench(config: Any, level: str, context: int) -> Estimate:
    """The runtime child running the artifact: file mapped, KV cache, compute buffers."""
    s = Sizes.of(config)
    family = family_of(config)
    return Estimate(
        f"bench {level}",
        (
            _base(),
            Term("runtime child: Python", CONST["runtime_child_base"]),
            Term(f"{level} file mapped", file_bytes(config, level)),
            Term("KV cache", arch_shapes.kv_cache_bytes(family, config, context)),
            Term("runtime buffers", CONST["runtime_compute"] + _logits(CONST["seq"], s).bytes),
        ),
    )


@dataclass(frozen=True)
class ExportEstimates:
    """Every phase of one GGUF export, in the order it runs; peak and disk over all of them."""

    phases: list[Estimate] = field(default_factory=list)

    @property
    def peak(self) -> Estimate:
        return max(self.phases, key=lambda e: e.memory_bytes)

    @property
    def disk_bytes(self) -> int:
        return disk_total(self.phases)


def disk_total(estimates: list[Estimate]) -> int:
    """Bytes written by all ``estimates``, a file named by several of them (the base) counted once."""
    seen: dict[str, int] = {}
    for e in estimates:
        for t in e.disk:
            seen[t.what] = max(seen.get(t.what, 0), t.bytes)
    return sum(seen.values())


def gguf_export(
    config: Any,
    levels: list[str],
    *,
    imatrix_used: bool = True,
    allocate: str | bool | None = "auto",
    verify_tokens: int | None = 1024,
    context: int = 4096,
) -> ExportEstimates:
    """The phases ``edgekit export --format gguf`` runs for ``levels``, in order (``verify_tokens=None``:
    no verification). The model is resident (bf16) while the imatrix or the probe needs it, and
    released before the streamed write (no probe) or before llama.cpp's quantizer (probe)."""
    from edgekit.export.gguf import DIRECT_LEVELS, IMATRIX_LEVELS

    quantized = [q for q in levels if q not in DIRECT_LEVELS]
    method = probes(config, allocate) if quantized else None
    needs_imatrix = imatrix_used and any(q in IMATRIX_LEVELS for q in levels)
    phases = [imatrix(config)] if needs_imatrix else []
    write = gguf_write(config, resident=method is not None)  # released after the imatrix unless the probe runs
    if method:  # the probe reads an F32 base
        base = Term("base file (temporary)", Sizes.of(config).params * CONST["probe_base_file"])
        write = replace(write, disk=(base,))
    phases.append(write)
    for q in (q for q in levels if q in DIRECT_LEVELS):  # streamed from the checkpoint like the base
        phases.append(replace(write, stage=f"export: write {q}", disk=(Term(f"{q} file", file_bytes(config, q)),)))
    if method:
        phases.append(allocation(config, method))
    base_bytes = CONST["probe_base_file"] if method else CONST["base_file"]
    phases += [gguf_quantize(config, q, base_bytes) for q in quantized]
    if verify_tokens:
        phases.append(verify_reference(config, verify_tokens))
        phases += [verify(config, q, verify_tokens, context) for q in levels]
    return ExportEstimates(phases)


def onnx_export_all(config: Any, levels: list[str]) -> ExportEstimates:
    """The phases ``edgekit export --format onnx`` runs: one builder run per level."""
    return ExportEstimates([onnx_export(config, q) for q in levels])


def source_bytes(folder: Any) -> int | None:
    """Bytes of a model folder's safetensors files (what a streaming reader maps), None if not a folder."""
    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        return None
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) or None
