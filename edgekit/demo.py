"""The built-in demo teacher: a small Llama trained on text every Python install carries.

It exists so that every stage (distill, prune, export, verify, bench) can be run and tested on a real
trained model with no download. It is sized so K-quants really apply (every weight row is a
multiple of 256) and trains in a few minutes on 2 CPU cores, deterministically for a fixed seed.
The result is cached in the user cache dir under a key of its recipe, corpus and torch version.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.fileio import atomic_path, read_json, sha256_json, write_json_atomic

DEMO_NAME = "edgekit-demo-llama"
DEMO_INFO_FILE = "edgekit-demo.json"


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that decides the demo teacher's weights."""

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 768
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    context_length: int = 1024
    seq_len: int = 256  # tokens per training row
    batch_size: int = 8  # rows per step
    steps: int = 300
    lr: float = 2e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    heldout_fraction: float = 0.05
    heldout_sequences: int = 16
    seed: int = 0


def demo_config(recipe: DemoRecipe | None = None) -> Any:
    """The demo teacher's HF config (no training, no weights): for ``plan`` and size predictions."""
    from transformers import LlamaConfig

    r = recipe or DemoRecipe()
    return LlamaConfig(
        vocab_size=r.vocab_size,
        hidden_size=r.hidden_size,
        intermediate_size=r.intermediate_size,
        num_hidden_layers=r.num_layers,
        num_attention_heads=r.num_heads,
        num_key_value_heads=r.num_kv_heads,
        max_position_embeddings=r.context_length,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        initializer_range=0.02,
    )


def cache_root() -> Path:
    """Where demo models are cached: ``$EDGEKIT_CACHE_DIR`` or the platform's user cache dir."""
    import os

    from platformdirs import user_cache_dir

    return Path(os.environ.get("EDGEKIT_CACHE_DIR") or user_cache_dir("edgekit"))


def demo_key(recipe: DemoRecipe) -> str:
    """Cache key: the recipe, the corpus text and the torch version (numerics differ across versions)."""
    import torch

    from edgekit.data import builtin_documents

    corpus = sha256_json(list(builtin_documents()))
    return sha256_json({"recipe": asdict(recipe), "corpus": corpus, "torch": torch.__version__})[:16]


def demo_teacher(recipe: DemoRecipe | None = None, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Path of the trained demo teacher (HF folder), training it first if it is not cached."""
    from edgekit.models import save_model

    recipe = recipe or DemoRecipe()
    folder = (cache_dir or cache_root()) / f"{DEMO_NAME}-{demo_key(recipe)}"
    if (folder / DEMO_INFO_FILE).is_file():
        return folder
    model, tokenizer, info = train_demo(recipe, progress=progress)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_path(folder) as tmp:
        save_model(model, tokenizer, tmp)
        write_json_atomic(tmp / DEMO_INFO_FILE, info)
    return folder


def demo_info(folder: Path) -> dict[str, Any]:
    """The facts recorded when the demo teacher was trained (held-out perplexity etc.)."""
    return read_json(Path(folder) / DEMO_INFO_FILE)


def train_demo(recipe: DemoRecipe, progress: bool = True):
    """Train the demo teacher from scratch: returns (model, tokenizer, info dict)."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgekit.data import builtin_documents, pack, split_documents, tokenize_documents
    from edgekit.tokenizer import train_byte_level_bpe

    started = time.perf_counter()
    train_docs, heldout_docs = split_documents(builtin_documents(), recipe.heldout_fraction)
    tokenizer = train_byte_level_bpe(train_docs, vocab_size=recipe.vocab_size)
    train_lists = tokenize_documents(tokenizer, train_docs)
    train = pack(train_lists, recipe.seq_len)
    heldout = pack(tokenize_documents(tokenizer, heldout_docs), recipe.seq_len, recipe.heldout_sequences)

    torch.manual_seed(recipe.seed)
    config = demo_config(recipe)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _fit(model, train, recipe, progress)
    model.eval()
    info = {
        "name": DEMO_NAME,
        "recipe": asdict(recipe),
        "train_tokens_available": int(train.numel()),
        "train_tokens_seen": recipe.steps * recipe.batch_size * recipe.seq_len,
        "heldout_tokens": int(heldout.numel()),
        "heldout_perplexity": heldout_perplexity(model, heldout),
        "unigram_perplexity": unigram_perplexity(train_lists, heldout, recipe.vocab_size),
        "train_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
    }
    return model, tokenizer, info


def _lr_at(step: int, recipe: DemoRecipe) -> float:
    """Linear warmup, then cosine decay to 10% of the peak learning rate."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _fit(model, train, recipe: DemoRecipe, progress: bool) -> None:
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    generator = torch.Generator().manual_seed(recipe.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.95))
    model.train()
    columns = [
        TextColumn("training demo teacher"),
        BarColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("train", total=recipe.steps, loss="")
        order = torch.randperm(len(train), generator=generator)
        cursor = 0
        for step in range(recipe.steps):
            if cursor + recipe.batch_size > len(order):
                order, cursor = torch.randperm(len(train), generator=generator), 0
            batch = train[order[cursor : cursor + recipe.batch_size]]
            cursor += recipe.batch_size
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, recipe)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            bar.update(task, advance=1, loss=f"loss {loss.item():.3f}")


def heldout_perplexity(model, heldout) -> float:
    """exp(mean next-token NLL) over held-out rows [n, seq_len]."""
    import torch

    with torch.no_grad():
        losses = [model(input_ids=row[None], labels=row[None]).loss.item() for row in heldout]
    return float(math.exp(sum(losses) / len(losses)))


def unigram_perplexity(train_lists, heldout, vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model of the training tokens on the held-out targets."""
    counts = Counter(t for ids in train_lists for t in ids)
    total = sum(counts.values()) + vocab_size
    targets = heldout[:, 1:].reshape(-1).tolist()  # the same targets the LM is scored on
    nll = -sum(math.log((counts.get(t, 0) + 1) / total) for t in targets) / len(targets)
    return float(math.exp(nll))
