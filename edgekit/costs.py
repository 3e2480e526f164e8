"""What a distillation or pruning-recovery run will cost, before it is started.

Every formula input and default lives in the tables below, one commented line each, so the numbers
edgekit prints can be traced and changed in one place (docs/decision-guide.md explains them).

    tokens        = --tokens, else tokens_per_param × student parameters
    teacher FLOPs = 2 × N_teacher × tokens                (scoring every training token once)
    generation    = 2 × N_teacher × tokens × fraction     (sequence-level KD only: the teacher writes text)
    student FLOPs = 6 × N_student × tokens                (forward + backward)
    GPU hours     = (teacher + student) ÷ (peak × mfu) + generation ÷ (peak × generation_mfu), ÷ 3600
    cache bytes   = tokens × (K × (id + log-prob) + tail + input id)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgekit.errors import ConfigError, Problem

# GPU class -> dense bf16 tensor-core TFLOP/s (vendor datasheets, without structured sparsity)
GPU_TFLOPS = {
    "H100": 989.0,  # NVIDIA H100 SXM5 datasheet: 989 TFLOPS bf16 dense (1,979 with sparsity)
    "A100": 312.0,  # NVIDIA A100 datasheet: 312 TFLOPS bf16 dense (624 with sparsity)
    "L4": 121.0,  # NVIDIA L4 datasheet: 242 TFLOPS bf16 with sparsity -> 121 dense
    "RTX4090": 165.2,  # NVIDIA Ada Lovelace whitepaper: 165.2 TFLOPS bf16, fp32 accumulate, dense
}

COST = {
    "teacher_flops_per_param_token": 2.0,  # a forward pass: one multiply-add per weight per token (Kaplan et al. 2020)
    "generation_flops_per_param_token": 2.0,  # a generated token is one forward pass of the teacher as well
    "student_flops_per_param_token": 6.0,  # forward (2) + backward (4) per weight per token (Kaplan et al. 2020)
    "mfu": 0.40,  # model FLOPs utilisation of training and batched scoring on one GPU (assumption)
    "generation_mfu": 0.10,  # sampling reads all weights per step, so far below training MFU (assumption)
    "distill_tokens_per_param": 20.0,  # new student: compute-optimal data, ~20 tokens/param (Hoffmann et al. 2022)
    "recover_tokens_per_param": 20.0,  # recovery: Minitron 94B tokens for 4B (~23); Sheared-LLaMA 50B for 2.7B (~18)
    "generated_tokens_fraction": 1.0,  # sequence-level KD trains on teacher-written text only (Kim & Rush 2016)
    "topk_logprob_bytes": 2,  # float16 log-probability per cached entry (edgekit.distill.cache)
    "topk_id_bytes_small_vocab": 2,  # uint16 token id per cached entry when the vocabulary has ≤ 65,536 tokens
    "topk_id_bytes_large_vocab": 4,  # int32 token id per cached entry for larger vocabularies
    "topk_tail_bytes": 4,  # float32 teacher mass outside the top K, per token
    "topk_input_id_bytes": 4,  # int32 input token id, per token
}


@dataclass(frozen=True)
class CostEstimate:
    """A run's size and price; FLOPs are totals, hours are wall-clock on one GPU of the class."""

    tokens: float  # training tokens
    tokens_per_param: float  # tokens ÷ student parameters
    teacher_flops: float  # scoring every training token
    generation_flops: float  # sequence-level KD: the teacher writing the training text (0 otherwise)
    student_flops: float  # training
    gpu: str  # the class the hours are for
    mfu: float  # utilisation assumed for training and scoring
    gpu_hours: float  # on one GPU of class ``gpu``
    gpu_hours_by_class: dict[str, float]  # the same run on every class in GPU_TFLOPS
    topk: int  # K of the teacher cache
    cache_bytes: float  # top-K teacher cache for every training token
    compute_budget_gpu_hours: float | None = None  # the user's budget, when given
    within_compute_budget: bool | None = None  # gpu_hours ≤ budget (None without a budget)
    tokens_within_budget: float | None = None  # tokens the budget pays for at the same rates

    def to_dict(self) -> dict:
        return asdict(self)


def gpu_class(name: str) -> str:
    """Canonical GPU class name ("rtx 4090" -> "RTX4090"); ``ConfigError`` lists the known ones."""
    key = name.upper().replace(" ", "").replace("-", "").replace("_", "")
    if key not in GPU_TFLOPS:
        raise ConfigError([Problem("--gpu-class", "", f"unknown GPU class {name!r}; known: {', '.join(GPU_TFLOPS)}")])
    return key


def topk_cache_bytes_per_token(k: int, vocab_size: int) -> int:
    """Bytes the top-K cache stores per token: K × (id + log-prob) + tail + input id."""
    id_bytes = COST["topk_id_bytes_small_vocab"] if vocab_size <= 65536 else COST["topk_id_bytes_large_vocab"]
    return int(k * (id_bytes + COST["topk_logprob_bytes"]) + COST["topk_tail_bytes"] + COST["topk_input_id_bytes"])


def _seconds(teacher: float, generation: float, student: float, tflops: float) -> float:
    return (teacher + student) / (tflops * 1e12 * COST["mfu"]) + generation / (tflops * 1e12 * COST["generation_mfu"])


def estimate(
    teacher_params: float,
    student_params: float,
    *,
    kind: str = "distill",
    tokens: float | None = None,
    gpu: str = "H100",
    topk: int = 64,
    vocab_size: int = 32000,
    sequence_level: bool = False,
    compute_budget_gpu_hours: float | None = None,
) -> CostEstimate:
    """Teacher inference + student training for ``kind`` ("distill" or "recover"), as FLOPs and GPU hours."""
    if kind not in ("distill", "recover"):
        raise ValueError(f"kind must be 'distill' or 'recover', not {kind!r}")
    gpu = gpu_class(gpu)
    tokens = tokens if tokens is not None else COST[f"{kind}_tokens_per_param"] * student_params
    teacher = COST["teacher_flops_per_param_token"] * teacher_params * tokens
    generated = tokens * COST["generated_tokens_fraction"] if sequence_level else 0.0
    generation = COST["generation_flops_per_param_token"] * teacher_params * generated
    student = COST["student_flops_per_param_token"] * student_params * tokens
    hours = {name: _seconds(teacher, generation, student, tf) / 3600 for name, tf in GPU_TFLOPS.items()}
    within = fitting_tokens = None
    if compute_budget_gpu_hours is not None:
        within = hours[gpu] <= compute_budget_gpu_hours
        fitting_tokens = tokens * compute_budget_gpu_hours / hours[gpu] if hours[gpu] > 0 else tokens
    return CostEstimate(
        tokens=tokens,
        tokens_per_param=tokens / student_params if student_params else 0.0,
        teacher_flops=teacher,
        generation_flops=generation,
        student_flops=student,
        gpu=gpu,
        mfu=COST["mfu"],
        gpu_hours=hours[gpu],
        gpu_hours_by_class=hours,
        topk=topk,
        cache_bytes=tokens * topk_cache_bytes_per_token(topk, vocab_size),
        compute_budget_gpu_hours=compute_budget_gpu_hours,
        within_compute_budget=within,
        tokens_within_budget=fitting_tokens,
    )
