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

from dataclasses import dataclass, field
from typing import Any

from edgekit.arch import family_of
from edgekit.arch import shapes as arch_shapes
from edgekit.formats import level as level_info

GiB = 2**30
# Measured or stated inputs of the formulas (bytes unless said otherwise).
CONST = {
    "python_base": int(0.55 * GiB),  # RSS of a Python with torch, transformers and llama_cpp imported (measured)
    "fp32": 4,  # bytes per float32 value (activations, logits, one layer upcast, optimizer state)
    "fp64": 8,  # bytes per float64 value (the allocation probe's log-softmax)
    "resident": 2,  # bytes per weight of the model held in memory (bf16, the checkpoints' own precision)
    "base_file": 2,  # bytes per weight of the intermediate GGUF the quantizer reads (BF16)
    "convert_copies": 3,  # float32 copies of one tensor while it is converted (read, transformed, written)
    "quantize_copies": 2,  # float32 copies of one tensor inside llama.cpp's quantizer (dequantized + work)
    "imatrix_rows": 16,  # calibration rows of the importance matrix (edgekit.export.gguf default)
    "seq": 256,  # tokens per calibration / verification row
    "batch": 4,  # rows per forward pass of the importance matrix and the allocation probe
    "probe_tokens": 1024,  # tokens the allocation probe's reference log-probs hold (sensitivity.MEASURE_TOKENS)
    "probe_files_bits": 61.0,  # Σ bits/weight of the probe's candidate files (Q2_K..Q8_0, with/without imatrix)
    "activation_widths": 4,  # [tokens, hidden]-sized float32 tensors alive in one layer's forward
    "ffn_widths": 3,  # [tokens, ffn]-sized float32 tensors alive in one MLP's forward (gate, up, product)
    "adamw_bytes": 16,  # per student weight in training: fp32 weight, gradient, two AdamW moments
    "logit_copies": 4,  # [batch, seq, vocab] float32 tensors alive in a distillation step (t, s, softmax, grad)
    "saved_widths": 12,  # [tokens, hidden] float32 values a layer saves for backward (attn + MLP inputs)
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
    """edgekit.lowmem upcasts one unit at a time: a decoder layer, or the embedding / output head."""
    return Term("largest unit (layer or embedding) in fp32", max(s.layer, s.largest) * CONST["fp32"])


def _activations(s: Sizes, tokens: int) -> Term:
    widths = CONST["activation_widths"] * s.hidden + CONST["ffn_widths"] * s.ffn
    return Term(f"activations of {tokens:,} tokens", tokens * widths * CONST["fp32"])


def _logits(tokens: int, s: Sizes, what: str = "logits", size: int = CONST["fp32"]) -> Term:
    return Term(f"{what} ({tokens:,} tokens × {s.vocab:,} vocab × {size})", tokens * s.vocab * size)


def file_bytes(config: Any, level: str) -> int:
    """Size of one exported file: parameters × the level's bits per weight ÷ 8 (as ``plan``)."""
    return int(Sizes.of(config).params * level_info(level).bits_per_weight / 8)


def gguf_write(config: Any, source_bytes: int | None = None) -> Estimate:
    """Streaming writer: the source mapped, one tensor converted at a time; writes the BF16 base."""
    s = Sizes.of(config)
    source = source_bytes if source_bytes is not None else s.params * CONST["resident"]
    return Estimate(
        "export: write",
        (
            _base(),
            Term("source safetensors mapped", source),
            Term("largest tensor converted in fp32", CONST["convert_copies"] * s.largest * CONST["fp32"]),
        ),
        (Term("BF16 base file (temporary)", s.params * CONST["base_file"]),),
    )


def gguf_quantize(config: Any, level: str) -> Estimate:
    """llama.cpp's quantizer in process: the BF16 base mapped, one tensor in fp32 at a time."""
    s = Sizes.of(config)
    return Estimate(
        f"export: quantize {level}",
        (
            _base(),
            Term("BF16 base file mapped", s.params * CONST["base_file"]),
            Term("largest tensor in fp32", CONST["quantize_copies"] * s.largest * CONST["fp32"]),
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


def allocation(config: Any) -> Estimate:
    """Sensitivity probe: reference log-probs kept once, a batch's fp64 log-softmax, candidate files."""
    s = Sizes.of(config)
    tokens = CONST["batch"] * CONST["seq"]
    return Estimate(
        "export: allocation",
        (
            _base(),
            _model(s),
            _layer_fp32(s),
            _activations(s, tokens),
            _logits(CONST["probe_tokens"], s, "reference log-probs"),
            _logits(tokens, s, "batch log-softmax ×2", 2 * CONST["fp64"]),
        ),
        (
            Term("BF16 base file (temporary)", s.params * CONST["base_file"]),
            Term("candidate quantized files (temporary)", int(s.params * CONST["probe_files_bits"] / 8)),
        ),
        optional=True,
    )


def verify(config: Any, level: str, tokens: int, context: int) -> Estimate:
    """Reference logits (computed once, fp model released) and the runtime child holding the file."""
    s = Sizes.of(config)
    family = family_of(config)
    return Estimate(
        f"verify {level}",
        (
            _base(),
            _logits(tokens, s, "reference + candidate logits", 2 * CONST["fp32"]),
            Term("runtime child: Python", CONST["python_base"]),
            Term(f"runtime child: {level} file mapped", file_bytes(config, level)),
            Term("runtime child: KV cache", arch_shapes.kv_cache_bytes(family, config, context)),
            Term("runtime child: buffers", CONST["runtime_compute"] + _logits(CONST["seq"], s).bytes),
        ),
    )


def verify_reference(config: Any, tokens: int) -> Estimate:
    """The reference logits, once per export: the model in bf16, one layer in fp32."""
    s = Sizes.of(config)
    return Estimate(
        "verify: reference logits",
        (_base(), _model(s), _layer_fp32(s), _activations(s, CONST["seq"]), _logits(tokens, s)),
    )


def onnx_export(config: Any, level: str) -> Estimate:
    """ONNX Runtime GenAI builder: the model in bf16, its initializers at the level, one layer in fp32."""
    s = Sizes.of(config)
    out = file_bytes(config, level)
    return Estimate(
        f"onnx: {level}",
        (_base(), _model(s), _layer_fp32(s), Term(f"{level} initializers", out)),
        (Term(f"{level} model", out),),
    )


def prune(config: Any, pruned_config: Any | None = None, rows: int = 16) -> Estimate:
    """Importance on calibration rows (bf16 model, fp32 per layer), then surgery into a smaller copy."""
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
            Term("pruned copy in bf16", after.params * CONST["resident"]),
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
            Term("runtime child: Python", CONST["python_base"]),
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
    allocate: bool = True,
    verify_tokens: int | None = 1024,
    context: int = 4096,
    source_bytes: int | None = None,
) -> ExportEstimates:
    """The phases ``edgekit export --format gguf`` runs for ``levels`` (``verify_tokens=None``: no verify)."""
    from edgekit.export.gguf import DIRECT_LEVELS, IMATRIX_LEVELS

    quantized = [q for q in levels if q not in DIRECT_LEVELS]
    phases = [gguf_write(config, source_bytes)]
    for q in (q for q in levels if q in DIRECT_LEVELS):  # written straight from the source, no quantizer
        direct = gguf_write(config, source_bytes)
        phases.append(Estimate(f"export: write {q}", direct.memory, (Term(f"{q} file", file_bytes(config, q)),)))
    if imatrix_used and any(q in IMATRIX_LEVELS for q in levels):
        phases.append(imatrix(config))
    if allocate and quantized:
        phases.append(allocation(config))
    phases += [gguf_quantize(config, q) for q in quantized]
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
