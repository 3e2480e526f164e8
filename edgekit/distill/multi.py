"""Multi-teacher distillation: one student, several teachers that share a tokenizer.

The target is the weighted **mixture** of the teachers' temperature-scaled distributions,
p̄ = Σ_i w_i · p_i^T, and the student is trained on D(p̄, q^T) exactly as with one teacher.

Why the mixture rather than a weighted sum of per-teacher KLs: for forward KL with weights that
do not depend on the student, Σ_i w_i·KL(p_i ‖ q) = KL(p̄ ‖ q) + [H(p̄) − Σ_i w_i·H(p_i)]; the
bracket (the teachers' generalised Jensen-Shannon divergence) does not involve the student, so
both give the same gradients. The mixture's value, though, reaches 0 when the student matches the
ensemble, so the monitor reads as it does with one teacher; it is the one target that extends to
reverse KL and JSD (a weighted sum of reverse KLs instead pulls the student towards the normalised
geometric mean, a product of experts that is near zero wherever any teacher is); and top-K caches
combine into one sparse distribution (see :func:`multi_topk_kl`).

Weights: ``fixed`` uses the given w_i (normalised to sum 1); ``confidence`` reweights them per
token by each teacher's top-1 probability at the training temperature, w_i(t) ∝ w_i·max_v p_i^T(v),
so on each token the teacher that is surer of itself counts more. The top-1 probability is what
a top-K cache stores exactly (its first entry), so cached and live training weight tokens alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from edgekit.distill.losses import _acc, _mask, divergence_per_token
from edgekit.errors import ConfigError, InputError, Problem

WEIGHTINGS = ("fixed", "confidence")


def normalise_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Teacher weights summing to 1 (equal when None); refuses a wrong count or a negative/zero total."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise ConfigError([Problem("--teacher-weights", "", f"{len(weights)} weights given for {n} teachers")])
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError([Problem("--teacher-weights", "", f"{list(weights)}: weights must be >= 0, sum > 0")])
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def token_weights(top1_logprobs: torch.Tensor, weights: Sequence[float], weighting: str = "fixed") -> torch.Tensor:
    """Per-token teacher weights [n_teachers, tokens] summing to 1 over teachers.

    ``top1_logprobs`` [n_teachers, tokens]: each teacher's largest log-probability at the training
    temperature (only read by ``confidence``).
    """
    w = torch.tensor(weights, dtype=top1_logprobs.dtype, device=top1_logprobs.device)[:, None]
    if weighting == "fixed":
        return w.expand_as(top1_logprobs)
    if weighting == "confidence":
        raw = w * top1_logprobs.exp()
        return raw / raw.sum(0, keepdim=True).clamp(min=1e-30)
    raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, not {weighting!r}")


def mixture_logprobs(
    teacher_logits: Sequence[torch.Tensor], weights: Sequence[float], temperature: float = 1.0, weighting: str = "fixed"
) -> torch.Tensor:
    """log p̄^T [tokens, vocab] of the weighted mixture of the teachers' softmax(logits / T)."""
    lps = torch.stack([F.log_softmax(_acc(t) / temperature, dim=-1) for t in teacher_logits])  # [n, tokens, V]
    w = token_weights(lps.max(-1).values, weights, weighting)
    return torch.logsumexp(lps + torch.log(w.clamp(min=1e-30))[..., None], dim=0)


def multi_teacher_kl(
    student: torch.Tensor,
    teacher_logits: Sequence[torch.Tensor],
    weights: Sequence[float],
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    weighting: str = "fixed",
    divergence: str = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """T²·D(p̄^T, student^T) averaged over counted tokens; logits [tokens, vocab], labels [tokens]."""
    mask = _mask(labels, student.shape[0], student.device)
    if not bool(mask.any()):
        return student.sum() * 0.0
    target = mixture_logprobs([t[mask] for t in teacher_logits], weights, temperature, weighting)
    s = F.log_softmax(_acc(student[mask]) / temperature, dim=-1)
    return divergence_per_token(s, target.to(s.dtype), divergence, beta).mean() * temperature**2


def multi_topk_kl(
    student: torch.Tensor,
    targets: Sequence[dict[str, torch.Tensor]],
    weights: Sequence[float],
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    weighting: str = "fixed",
) -> torch.Tensor:
    """T²·KL(p̄ ‖ q) from several teachers' top-K caches, each with its exact tail mass.

    ``targets``: per teacher ``logprobs`` [tokens, K] (largest first), ``ids`` [tokens, K] and
    ``tail`` [tokens]. Teacher i knows its probabilities on its own top-K set S_i only; its tail
    mass r_i lies somewhere on V \\ S_i. As with one teacher (whose tail bucket is exact when the
    teacher's tail is shaped like the student's), each tail is spread over V \\ S_i in proportion
    to the student's own (detached) probabilities there. The mixture is then known on the union
    U = ∪ S_i token by token, and as one bucket on the rest R = V \\ U:

        p̄(v) = Σ_{i: v∈S_i} w_i p_i(v) + Σ_{i: v∉S_i} w_i r_i q(v) / q(V \\ S_i),   v ∈ U
        p̄(R) = Σ_i w_i r_i q(R) / q(V \\ S_i)

    and the loss is the KL over the buckets U ∪ {R}. With one teacher this is exactly the
    single-teacher bucket loss (``topk_kl``); with K = vocab it is exactly the full mixture KL.
    """
    mask = _mask(labels, student.shape[0], student.device)
    if not bool(mask.any()):
        return student.sum() * 0.0
    s = F.log_softmax(_acc(student[mask]) / temperature, dim=-1)  # [N, V]
    q = s.detach().exp()
    lps = [t["logprobs"][mask].to(s.dtype) for t in targets]
    ids = [t["ids"][mask].long() for t in targets]
    tails = [t["tail"][mask].to(s.dtype).clamp(min=0) for t in targets]
    w = token_weights(torch.stack([lp[:, 0] for lp in lps]), weights, weighting)  # [n, N]
    known = torch.zeros_like(s)
    in_union = torch.zeros_like(s, dtype=torch.bool)
    spread = torch.zeros_like(s)  # Σ_{i: v∉S_i} w_i r_i / q(V \ S_i), per id
    rest_factor = torch.zeros_like(s[:, 0])  # Σ_i w_i r_i / q(V \ S_i)
    for i, (lp, idx, tail) in enumerate(zip(lps, ids, tails, strict=True)):
        member = torch.zeros_like(in_union).scatter_(1, idx, True)
        known.scatter_add_(1, idx, w[i][:, None] * lp.exp())
        in_union |= member
        q_outside = (q * ~member).sum(-1).clamp(min=1e-30)
        factor = w[i] * tail / q_outside
        spread += factor[:, None] * ~member
        rest_factor += factor
    target = torch.where(in_union, known + spread * q, 0.0)
    kl_union = torch.where(in_union & (target > 0), target * (torch.log(target.clamp(min=1e-30)) - s), 0.0).sum(-1)
    q_rest = (q * ~in_union).sum(-1)
    t_rest = rest_factor * q_rest
    # log of the student's mass on R: log(1 − Σ_U q), stably as log(−expm1(logsumexp over U))
    u_lse = torch.logsumexp(s.masked_fill(~in_union, float("-inf")), dim=-1).clamp(max=-1e-7)
    s_rest_log = torch.log(-torch.expm1(u_lse))
    kl_rest = torch.where(t_rest > 1e-9, t_rest * (torch.log(t_rest.clamp(min=1e-30)) - s_rest_log), 0.0)
    return (kl_union + kl_rest).mean() * temperature**2


class TeacherEnsemble(torch.nn.Module):
    """Several teachers seen by the trainer as one: its logits are T·log p̄^T.

    softmax(logits / T) of that is the mixture itself, so every single-teacher loss, the monitor
    and on-policy scoring use it unchanged; the trainer sets ``temperature`` to its own (``at``).
    Hidden-state alignment and the fused loss need one teacher's hidden states and are refused.
    """

    def __init__(self, teachers: Sequence, weights: Sequence[float] | None = None, weighting: str = "fixed"):
        super().__init__()
        if len(teachers) < 2:
            raise ValueError("an ensemble needs at least two teachers")
        if weighting not in WEIGHTINGS:
            raise ConfigError([Problem("--teacher-weighting", "", f"{weighting!r} is not one of {WEIGHTINGS}")])
        vocab = {int(t.config.vocab_size) for t in teachers}
        if len(vocab) > 1:
            raise InputError("teachers", f"vocabulary sizes differ ({sorted(vocab)}); rerun with --seq-kd")
        self.teachers = torch.nn.ModuleList(teachers)
        self.weights = normalise_weights(weights, len(teachers))
        self.weighting = weighting
        self.temperature = 1.0
        self.config = teachers[0].config

    def at(self, temperature: float) -> TeacherEnsemble:
        """The same teachers and weights, with logits made for ``temperature``."""
        other = TeacherEnsemble(list(self.teachers), self.weights, self.weighting)
        other.temperature = float(temperature)
        return other.train(self.training)

    def forward(self, input_ids: torch.Tensor, **kwargs) -> SimpleNamespace:
        if kwargs.get("output_hidden_states") or kwargs.get("output_attentions"):
            raise ValueError("a teacher ensemble has no single set of hidden states or attention maps")
        logits = [t(input_ids=input_ids).logits for t in self.teachers]
        shape = logits[0].shape
        flat = [x.reshape(-1, shape[-1]) for x in logits]
        lp = mixture_logprobs(flat, self.weights, self.temperature, self.weighting)
        return SimpleNamespace(logits=(lp * self.temperature).reshape(shape))


class TeacherCaches:
    """Top-K caches of several teachers over the same rows, read together (the trainer's ``topk_cache``)."""

    def __init__(self, caches: Sequence, weights: Sequence[float] | None = None, weighting: str = "fixed"):
        first = caches[0]
        for c in caches[1:]:
            for key in ("rows_sha256", "temperature", "vocab"):
                if c.index[key] != first.index[key]:
                    raise InputError(c.folder, f"top-K cache differs from {first.folder} in {key}; rebuild both")
        if weighting not in WEIGHTINGS:
            raise ConfigError([Problem("--teacher-weighting", "", f"{weighting!r} is not one of {WEIGHTINGS}")])
        self.caches = list(caches)
        self.weights = normalise_weights(weights, len(caches))
        self.weighting = weighting
        self.index = first.index
        self.folder = first.folder

    @property
    def temperature(self) -> float:
        return self.caches[0].temperature

    @property
    def bytes_per_token(self) -> float:
        """Bytes on disk per token, all teachers' caches together."""
        return sum(c.bytes_per_token for c in self.caches)

    def __len__(self) -> int:
        return len(self.caches[0])

    def all_input_ids(self) -> torch.Tensor:
        return self.caches[0].all_input_ids()

    def kd_loss(self, s_logits: torch.Tensor, idx: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The multi-teacher top-K loss for student logits [tokens, V] of rows ``idx``."""
        device = s_logits.device
        targets = []
        for cache in self.caches:
            b = cache.batch(idx.cpu())
            k = b["ids"].shape[-1]
            targets.append(
                {
                    "logprobs": b["logprobs"].reshape(-1, k).to(device),
                    "ids": b["ids"].reshape(-1, k).to(device),
                    "tail": b["tail"].reshape(-1).to(device),
                }
            )
        return multi_topk_kl(s_logits, targets, self.weights, self.temperature, labels, self.weighting)


def check_shared_tokenizer(tokenizers: Sequence, names: Sequence[str]) -> None:
    """Refuse teachers whose tokenizers differ: their distributions are over different tokens."""
    from edgekit.distill.job import same_vocabulary

    for tok, name in zip(tokenizers[1:], names[1:], strict=True):
        if not same_vocabulary(tokenizers[0], tok):
            raise InputError(
                name,
                f"tokenizer differs from the first teacher's ({names[0]}), so their distributions cannot be mixed; "
                "distill from each with --seq-kd (sequence-level KD needs only their text) instead",
            )


def load_ensemble(
    first, first_tok, first_name: str, more: Sequence[str], weights, weighting: str, train, cache_dir, k, progress
):
    """(TeacherEnsemble, TeacherCaches or None): the first teacher plus ``more`` (paths or 'demo').

    With ``cache_dir`` every teacher's top-K cache is built under ``cache_dir/teacher-<i>``.
    """
    from edgekit.distill.job import resolve_teacher_path
    from edgekit.models import load_model, load_tokenizer

    paths = [resolve_teacher_path(p, progress) for p in more]
    check_shared_tokenizer([first_tok, *(load_tokenizer(p) for p in paths)], [first_name, *more])
    ensemble = TeacherEnsemble([first, *(load_model(p) for p in paths)], weights, weighting)
    if cache_dir is None:
        return ensemble, None
    from pathlib import Path

    from edgekit.distill.cache import build_topk_cache

    caches = [
        build_topk_cache(t, train, Path(cache_dir) / f"teacher-{i}", k=k, progress=progress)
        for i, t in enumerate(ensemble.teachers)
    ]
    return ensemble, TeacherCaches(caches, ensemble.weights, weighting)
