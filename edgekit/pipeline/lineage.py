"""The pipeline's story in numbers: each stage's model measured on the same held-out text as the teacher.

For the teacher and the model every training stage produced (distill, prune, recover) the build
records parameters, bytes on disk, perplexity on held-out text, and mean KL and top-1 agreement
against the teacher on the same tokens — the teacher's own perplexity is the baseline. These rows go
into the bundle's manifest (``lineage``) and the build report draws them; nothing here is predicted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HELDOUT_TOKENS = 2048  # held-out tokens each stage model is scored on (the verify stage's order of size)


def _disk_bytes(folder: Path) -> int:
    """Bytes of the model's weight files (safetensors) in ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def stage_rows(
    models: list[tuple[str, Path]], teacher: Path, seconds: dict[str, float], tokens: int = HELDOUT_TOKENS
) -> list[dict[str, Any]]:
    """One row per (stage name, model folder), teacher first; ``seconds`` maps stage name to its run time.

    Perplexity is exp(mean next-token cross-entropy) on the built-in corpus's held-out split, tokenized
    by the teacher's tokenizer; KL is KL(teacher ‖ model) in nats per token. A model whose vocabulary
    differs from the teacher's gets no KL or top-1 (None).
    """
    import torch

    from edgekit.export.verify import reference_rows
    from edgekit.models import count_parameters, load_model, load_tokenizer
    from edgekit.quality import compare_logits

    rows = reference_rows(load_tokenizer(teacher), None, tokens)
    targets = rows[:, 1:].reshape(-1).numpy()
    reference = None
    out = []
    for name, folder in models:
        model = load_model(folder)
        with torch.no_grad():
            logits = model(input_ids=rows).logits.float().numpy()
        flat = logits[:, :-1].reshape(-1, logits.shape[-1])
        if reference is None:
            reference = flat  # the teacher is first
        same_vocab = flat.shape[-1] == reference.shape[-1]
        cmp = compare_logits(reference if same_vocab else flat, flat, targets)
        out.append(
            {
                "stage": name,
                "parameters": count_parameters(model),
                "size_bytes": _disk_bytes(folder),
                "heldout_tokens": len(targets),
                "perplexity": cmp.ppl_candidate,
                "mean_kl_vs_teacher": cmp.mean_kl if same_vocab else None,
                "top1_vs_teacher": cmp.top1 if same_vocab else None,
                "seconds": seconds.get(name),
            }
        )
        del model
    return out
