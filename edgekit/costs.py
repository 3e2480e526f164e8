"""What a distillation or pruning-recovery run will cost, before it is started.

Every formula input and default lives in the tables below, one commented line each, so the numbers
edgekit prints can be traced and changed in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# name -> dense bf16 tensor TFLOP/s (vendor datasheets, without structured sparsity)
GPU_TFLOPS = {
    "H100": 989.0,  # NVIDIA H100 SXM5 datasheet: 989 TFLOPS bf16 dense
    "A100": 312.0,  # NVIDIA A100 datasheet: 312 TFLOPS bf16 dense
    "L4": 121.0,  # NVIDIA L4 datasheet: 242 TFLOPS bf16 with sparsity -> 121 dense
    "RTX4090": 165.2,  # Ada whitepaper: 165.2 TFLOPS bf16 with fp32 accumulate, dense
}

COST = {
    "teacher_flops_per_param_token": 2.0,  # forward pass: one multiply-add per weight per token
    "student_flops_per_param_token": 6.0,  # forward + backward (2 + 4) per weight per token
    "mfu": 0.40,  # model FLOPs utilisation a tuned trainer reaches on one GPU
    "distill_tokens_per_param": 20.0,  # Chinchilla-optimal data for a freshly initialised student
    "recover_tokens_per_param": 20.0,  # Minitron: 94B tokens for 4B (~23); Sheared-LLaMA: 50B for 2.7B (~18)
    "generation_tokens_fraction": 0.5,  # sequence-level KD: share of training tokens the teacher generates
    "generation_flops_factor": 3.0,  # decoding is memory-bound: ~3x the FLOP-time of batched scoring
    "topk_id_bytes": 4,  # int32 token id per cached entry
    "topk_logprob_bytes": 2,  # fp16 log-probability per cached entry
    "topk_tail_bytes": 4,  # fp32 leftover probability mass per token
}


@dataclass(frozen=True)
class CostEstimate:
    tokens: float  # training tokens
    teacher_flops: float
    student_flops: float
    gpu: str
    gpu_hours: float  # at COST["mfu"]
    topk: int
    cache_bytes: float  # top-K teacher cache for all tokens

    def to_dict(self) -> dict:
        return asdict(self)


def topk_cache_bytes_per_token(k: int) -> int:
    """K × (id + log-prob) + tail mass."""
    return k * (COST["topk_id_bytes"] + COST["topk_logprob_bytes"]) + COST["topk_tail_bytes"]


def estimate(
    teacher_params: float,
    student_params: float,
    *,
    kind: str = "distill",
    tokens: float | None = None,
    gpu: str = "H100",
    topk: int = 64,
    sequence_level: bool = False,
) -> CostEstimate:
    """Teacher inference + student training FLOPs for ``kind`` ("distill" or "recover"), as GPU hours."""
    if gpu not in GPU_TFLOPS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPU_TFLOPS)}")
    per_param = COST["distill_tokens_per_param"] if kind == "distill" else COST["recover_tokens_per_param"]
    tokens = tokens if tokens is not None else per_param * student_params
    teacher = COST["teacher_flops_per_param_token"] * teacher_params * tokens
    if sequence_level:
        teacher += (
            COST["teacher_flops_per_param_token"]
            * teacher_params
            * tokens
            * COST["generation_tokens_fraction"]
            * COST["generation_flops_factor"]
        )
    student = COST["student_flops_per_param_token"] * student_params * tokens
    seconds = (teacher + student) / (GPU_TFLOPS[gpu] * 1e12 * COST["mfu"])
    return CostEstimate(tokens, teacher, student, gpu, seconds / 3600, topk, tokens * topk_cache_bytes_per_token(topk))
