"""Teacher top-K cache: exactness at K = vocab, resumable builds, size, training without the teacher."""

from __future__ import annotations

import pytest
import torch

import edgekit.distill.cache as cache_mod
from edgekit.distill import DistillConfig, derive_student, distill
from edgekit.distill.cache import TopKCache, build_topk_cache
from edgekit.distill.losses import next_token_labels, soft_kl, topk_kl
from edgekit.errors import InputError
from edgekit.models import load_model

SEQ = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher(make_tiny_hf):
    return load_model(make_tiny_hf("llama"))


@pytest.fixture(scope="module")
def rows(teacher):
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, teacher.config.vocab_size, (10, SEQ), generator=g)


def test_cache_loss_equals_full_kl_when_k_is_vocab(teacher, rows, tmp_path):
    vocab = teacher.config.vocab_size
    cache = build_topk_cache(teacher, rows, tmp_path, k=vocab, shard_rows=4)
    student = derive_student(teacher, num_layers=1)
    idx = torch.tensor([0, 5, 9])
    with torch.no_grad():
        s = student(input_ids=rows[idx]).logits.reshape(-1, vocab)
        t = teacher(input_ids=rows[idx]).logits.reshape(-1, vocab)
    b = cache.batch(idx)
    labels = next_token_labels(rows[idx])
    got = topk_kl(s, b["logprobs"].reshape(-1, vocab), b["ids"].reshape(-1, vocab), labels, b["tail"].reshape(-1))
    # log-probs are stored as float16 (≈3 significant digits), the only difference from the full loss
    assert got.item() == pytest.approx(soft_kl(s, t, 1.0, labels).item(), rel=2e-3)
    assert b["tail"].abs().max().item() < 1e-6


def test_cache_stores_ids_as_uint16_and_reports_bytes_per_token(teacher, rows, tmp_path):
    cache = build_topk_cache(teacher, rows, tmp_path, k=64, shard_rows=5)
    from safetensors.torch import load_file

    shard = load_file(tmp_path / cache.index["shards"][0])
    assert shard["ids"].dtype == torch.uint16 and shard["logprobs"].dtype == torch.float16
    payload = 64 * (2 + 2) + 4 + 4  # log-probs, ids, tail, input id
    assert payload <= cache.bytes_per_token < payload * 1.1  # plus safetensors headers
    assert cache.index["bytes"] == sum(p.stat().st_size for p in tmp_path.glob("shard-*.safetensors"))


def test_interrupted_cache_build_resumes_and_skips_finished_shards(teacher, rows, tmp_path, monkeypatch):
    reference = build_topk_cache(teacher, rows, tmp_path / "ref", k=8, shard_rows=3)
    real_save, saved = cache_mod.save_file, []

    def failing_save(tensors, path):
        if len(saved) == 2:
            raise KeyboardInterrupt
        saved.append(path)
        real_save(tensors, path)

    monkeypatch.setattr(cache_mod, "save_file", failing_save)
    with pytest.raises(KeyboardInterrupt):
        build_topk_cache(teacher, rows, tmp_path / "run", k=8, shard_rows=3)
    assert sorted(p.name for p in (tmp_path / "run").glob("shard-*")) == [
        "shard-00000.safetensors",
        "shard-00001.safetensors",
    ]
    with pytest.raises(InputError, match="incomplete"):
        TopKCache(tmp_path / "run")
    monkeypatch.setattr(cache_mod, "save_file", real_save)
    calls = {"n": 0}
    real_topk = cache_mod.teacher_topk

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real_topk(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "teacher_topk", counting)
    resumed = build_topk_cache(teacher, rows, tmp_path / "run", k=8, shard_rows=3, batch=3)
    assert calls["n"] == 2  # shards 2 (3 rows) and 3 (1 row) only
    idx = torch.arange(len(rows))
    for key, value in reference.batch(idx).items():
        assert torch.equal(value, resumed.batch(idx)[key]), key


def test_cache_folder_of_other_rows_is_refused(teacher, rows, tmp_path):
    build_topk_cache(teacher, rows, tmp_path, k=8)
    with pytest.raises(InputError, match="rows_sha256"):
        build_topk_cache(teacher, rows.flip(0), tmp_path, k=8)


def test_student_trains_from_cache_without_teacher_and_gets_closer_to_it(teacher, rows, tmp_path):
    cache = build_topk_cache(teacher, rows, tmp_path, k=32, shard_rows=4)
    config = DistillConfig(steps=10, batch_size=4, lr=3e-3, warmup_steps=2, alpha=0.0, temperature=1.0)
    heldout = rows[:4]
    start = distill(teacher, derive_student(teacher, num_layers=1), rows, DistillConfig(steps=0), heldout_ids=heldout)
    student = derive_student(teacher, num_layers=1)
    distill(None, student, None, config, topk_cache=cache, progress=False)
    after = distill(teacher, student, rows, DistillConfig(steps=0), heldout_ids=heldout, progress=False)
    assert after.final["kl"] < start.final["kl"] * 0.9


def test_training_on_rows_other_than_the_cached_ones_is_refused(teacher, rows, tmp_path):
    cache = build_topk_cache(teacher, rows, tmp_path, k=8)
    student = derive_student(teacher, num_layers=1)
    with pytest.raises(InputError, match="other token rows"):
        distill(None, student, rows + 1, DistillConfig(steps=1, batch_size=2), topk_cache=cache, progress=False)
