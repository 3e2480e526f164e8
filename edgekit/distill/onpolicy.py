"""On-policy KD (GKD, Agarwal et al. 2024): train on the student's own samples, scored by the teacher.

With teacher-forced KD the student only ever sees teacher/corpus prefixes; at inference it conditions
on its own, slightly different tokens and errors compound (exposure bias). On a fraction λ of steps
we keep the first ``prompt_len`` tokens of each row, let the student sample the rest, and take the
divergence to the teacher on the sampled positions only.

Sampling is seeded from (seed, step), not the global RNG, so a resumed run draws the same samples.
"""

from __future__ import annotations

import torch

from edgekit.distill.losses import next_token_labels


def uses_student_samples(step: int, fraction: float, seed: int) -> bool:
    """Whether ``step`` is an on-policy step: a seeded coin with P(heads) = ``fraction``."""
    if fraction <= 0:
        return False
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return bool(torch.rand((), generator=g).item() < fraction)


@torch.no_grad()
def sample_continuations(model, prompts: torch.Tensor, new_tokens: int, seed: int, temperature: float = 1.0):
    """Sample ``new_tokens`` after each prompt row [b, p]: returns [b, p + new_tokens] (ancestral, full vocab)."""
    was_training = model.training
    model.eval()
    g = torch.Generator(device=prompts.device).manual_seed(seed)
    rows, past = prompts, None
    step_input = prompts
    for _ in range(new_tokens):
        out = model(input_ids=step_input, past_key_values=past, use_cache=True)
        past = out.past_key_values
        probs = torch.softmax(out.logits[:, -1].float() / temperature, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=g)
        rows = torch.cat([rows, nxt], dim=1)
        step_input = nxt
    model.train(was_training)
    return rows


def on_policy_batch(student, rows: torch.Tensor, prompt_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(student-sampled rows [b, seq], labels [b*seq]) where only sampled targets count."""
    prompt_len = max(1, min(prompt_len, rows.shape[1] - 1))
    sampled = sample_continuations(student, rows[:, :prompt_len], rows.shape[1] - prompt_len, seed)
    lengths = torch.full((rows.shape[0],), prompt_len, dtype=torch.long, device=rows.device)
    return sampled, next_token_labels(sampled, prompt_lengths=lengths)
