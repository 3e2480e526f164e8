"""Sequence-level KD (Kim & Rush 2016): the teacher writes responses, the student learns to write them.

It needs only text from the teacher, so it is the route when teacher and student tokenizers differ
(logit-level KD needs one vocabulary). Responses go to JSONL, one ``{"prompt", "response"}`` per
line, appended as they are produced, so an interrupted generation resumes after the last line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch


def _done(path: Path) -> int:
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@torch.no_grad()
def generate_responses(
    teacher,
    tokenizer,
    prompts: Sequence[str],
    out: str | Path,
    *,
    max_new_tokens: int = 64,
    batch: int = 8,
    do_sample: bool = False,
    seed: int = 0,
) -> Path:
    """Teacher responses for ``prompts`` (batched, left-padded) appended to JSONL ``out``; resumes."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = next(teacher.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    teacher.eval()
    try:
        for start in range(_done(out), len(prompts), batch):
            chunk = list(prompts[start : start + batch])
            enc = tokenizer(chunk, return_tensors="pt", padding=True)
            enc = {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}
            torch.manual_seed(seed + start)
            sampling = {"do_sample": True, "top_k": 0} if do_sample else {"do_sample": False}
            ids = teacher.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=pad, **sampling)
            texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            with open(out, "a", encoding="utf-8") as fh:
                for prompt, response in zip(chunk, texts, strict=True):
                    fh.write(json.dumps({"prompt": prompt, "response": response}) + "\n")
    finally:
        tokenizer.padding_side = side
    return out


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(prompt, response) pairs of a JSONL file written by :func:`generate_responses`."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [(r["prompt"], r["response"]) for r in (json.loads(line) for line in lines if line.strip())]


def sequence_rows(tokenizer, pairs: Sequence[tuple[str, str]], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows [n, seq_len] (prompt + response + EOS, right-padded) and prompt lengths [n].

    Feed both to ``distill(..., prompt_lengths=...)`` with α = 1: the loss covers response tokens
    only. Rows are padded with EOS, so the padded tail only teaches "after EOS comes EOS", which
    never matters at inference (generation stops at the first EOS) and needs no extra mask.
    """
    eos = tokenizer.eos_token_id
    rows, lengths = [], []
    for prompt, response in pairs:
        p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [eos]
        ids = (p + r)[:seq_len]
        ids = ids + [eos] * (seq_len - len(ids))
        rows.append(ids)
        lengths.append(min(len(p), seq_len - 1))
    return torch.tensor(rows, dtype=torch.long), torch.tensor(lengths, dtype=torch.long)
