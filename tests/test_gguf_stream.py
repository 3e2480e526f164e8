"""The streaming GGUF writer: the same bytes as the in-memory writer, without loading the model.

For every registered family with a GGUF form, tied and untied, from float32 and bfloat16 checkpoints,
single-file and sharded: ``write_gguf_streaming`` must write the file ``write_gguf`` writes from the
loaded model, byte for byte. A quantized level made from the BF16 base of a bf16 checkpoint must equal
the one made from its F32 file. Checkpoints the stream cannot reproduce fall back to the in-memory
writer with one log line; broken files are one ``InputError`` naming the file, and nothing is left
under the final name.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch

from edgekit.arch import REGISTRY
from edgekit.errors import InputError
from edgekit.export.gguf import export_gguf, write_gguf
from edgekit.export.gguf_stream import GgufSource, stream_plan, write_gguf_streaming
from edgekit.models import load_config, load_model, load_tokenizer

GGUF_FAMILIES = sorted(name for name, family in REGISTRY.items() if family.gguf_arch)
TIED_ONLY = {"gemma2"}  # llama.cpp's gemma2 graph has no separate output tensor
LEVELS = ("F32", "F16", "BF16")


def _cases():
    for family in GGUF_FAMILIES:
        for tied in (False, True):
            if family in TIED_ONLY and not tied:
                continue
            yield pytest.param(family, tied, id=f"{family}-{'tied' if tied else 'untied'}")


def _resave(src: Path, dst: Path, *, dtype: torch.dtype | None = None, shard: str | None = None) -> Path:
    """A copy of a HF folder whose weights are stored in ``dtype`` and/or in shards of ``shard`` bytes."""
    model = load_model(src)
    if dtype is not None:
        model = model.to(dtype)
    dst.mkdir(parents=True)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(dst, safe_serialization=True, **kwargs)
    load_tokenizer(src).save_pretrained(dst)
    return dst


def _reference(model_dir: Path, path: Path, level: str) -> bytes:
    return write_gguf(load_model(model_dir), load_tokenizer(model_dir), path, level, "m", {"source": "x"}).read_bytes()


def _streamed(model_dir: Path, path: Path, level: str) -> bytes:
    plan, why = stream_plan(model_dir, load_config(model_dir))
    assert plan is not None, why
    return write_gguf_streaming(plan, load_tokenizer(model_dir), path, level, "m", {"source": "x"}).read_bytes()


def _assert_same(model_dir: Path, tmp_path: Path, levels=LEVELS) -> None:
    for level in levels:
        ref = _reference(model_dir, tmp_path / f"ref-{level}.gguf", level)
        got = _streamed(model_dir, tmp_path / f"stream-{level}.gguf", level)
        assert got == ref, f"{model_dir.name} {level}: streamed file differs from the in-memory writer's"


@pytest.mark.parametrize(("family", "tied"), list(_cases()))
def test_streamed_file_is_byte_identical_fp32_source(make_tiny_hf, tmp_path, one_torch_thread, family, tied):
    _assert_same(make_tiny_hf(family, tie_word_embeddings=tied), tmp_path)


@pytest.mark.parametrize(("family", "tied"), list(_cases()))
def test_streamed_file_is_byte_identical_bf16_source(make_tiny_hf, tmp_path, one_torch_thread, family, tied):
    bf16 = _resave(make_tiny_hf(family, tie_word_embeddings=tied), tmp_path / "bf16", dtype=torch.bfloat16)
    plan, _ = stream_plan(bf16, load_config(bf16))
    assert plan.source_level == "BF16"
    _assert_same(bf16, tmp_path)


def test_streamed_file_is_byte_identical_f16_source_and_sharded(make_tiny_hf, tmp_path, one_torch_thread):
    sharded = _resave(make_tiny_hf("llama"), tmp_path / "sharded", dtype=torch.float16, shard="300KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) > 2
    plan, _ = stream_plan(sharded, load_config(sharded))
    assert plan.source_level == "F16"
    _assert_same(sharded, tmp_path)


def test_blocks_of_rows_give_the_same_bytes(make_tiny_hf, tmp_path, one_torch_thread, monkeypatch):
    """Tensors converted in many small blocks of rows (as a 1 B model's are) equal whole-tensor conversion."""
    import edgekit.export.gguf_stream as stream

    model_dir = make_tiny_hf("gemma3_text")  # norm offset and qk norms: blocks must not skip a transform
    bf16 = _resave(model_dir, tmp_path / "bf16", dtype=torch.bfloat16)
    monkeypatch.setattr(stream, "CHUNK_ELEMENTS", 1000)  # a few rows per block
    _assert_same(bf16, tmp_path, levels=("F32", "BF16"))


def test_bf16_base_quantizes_to_the_same_bytes_as_f32(make_tiny_hf, tmp_path, one_torch_thread):
    pytest.importorskip("llama_cpp")
    from edgekit.export.quantize import quantize_gguf

    bf16 = _resave(make_tiny_hf("llama"), tmp_path / "bf16", dtype=torch.bfloat16)
    plan, _ = stream_plan(bf16, load_config(bf16))
    tok = load_tokenizer(bf16)
    f32 = write_gguf_streaming(plan, tok, tmp_path / "m-F32.gguf", "F32", "m")
    base = write_gguf_streaming(plan, tok, tmp_path / "m-BF16.gguf", "BF16", "m")
    for level in ("Q4_K_M", "Q8_0"):
        a = quantize_gguf(f32, tmp_path / f"a-{level}.gguf", level).read_bytes()
        b = quantize_gguf(base, tmp_path / f"b-{level}.gguf", level).read_bytes()
        assert a == b, f"{level} from the BF16 base differs from {level} from F32"


def test_export_quantizes_from_the_source_precision(make_tiny_hf, tmp_path, one_torch_thread, monkeypatch):
    """export_gguf writes a BF16 base (not F32) for a bf16 checkpoint and never loads the model."""
    pytest.importorskip("llama_cpp")
    import edgekit.export.gguf_stream as stream
    import edgekit.models as models
    from edgekit.export.quantize import quantize_gguf

    bf16 = _resave(make_tiny_hf("llama"), tmp_path / "bf16", dtype=torch.bfloat16)
    written = []
    real = stream.write_gguf_streaming
    monkeypatch.setattr(
        stream,
        "write_gguf_streaming",
        lambda plan, tok, path, level, *a: written.append(level) or real(plan, tok, path, level, *a),
    )
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    (q4,) = export_gguf(bf16, tmp_path / "out", ["Q4_K_M"], imatrix=None, provenance={}, progress=False)
    assert written == ["BF16"]
    monkeypatch.undo()
    ref_f32 = write_gguf(load_model(bf16), load_tokenizer(bf16), tmp_path / "ref-F32.gguf", "F32", "bf16", {})
    assert q4.read_bytes() == quantize_gguf(ref_f32, tmp_path / "ref-Q4_K_M.gguf", "Q4_K_M").read_bytes()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".edgekit-tmp")]


def test_export_reuses_a_requested_level_as_the_base(make_tiny_hf, tmp_path, one_torch_thread, monkeypatch):
    pytest.importorskip("llama_cpp")
    import edgekit.export.gguf_stream as stream

    written = []
    real = stream.write_gguf_streaming
    monkeypatch.setattr(
        stream,
        "write_gguf_streaming",
        lambda plan, tok, path, level, *a: written.append(level) or real(plan, tok, path, level, *a),
    )
    export_gguf(make_tiny_hf("llama"), tmp_path / "out", ["F32", "F16", "Q8_0"], imatrix=None, progress=False)
    assert written == ["F32", "F16"]  # fp32 checkpoint: the F32 file is the base, written once


def _base_model_folder(src: Path, dst: Path) -> Path:
    """The folder as a bare ``LlamaModel`` saves it: no ``model.`` prefix, which transformers adds on load."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(dst / "model.safetensors")
    save_file({k.removeprefix("model."): v for k, v in weights.items()}, dst / "model.safetensors", {"format": "pt"})
    return dst


def test_renamed_checkpoint_falls_back_with_one_log_line(make_tiny_hf, tmp_path, one_torch_thread, caplog):
    src = make_tiny_hf("llama", tie_word_embeddings=True)
    renamed = _base_model_folder(src, tmp_path / "renamed")
    with caplog.at_level(logging.INFO, logger="edgekit.export.gguf_stream"):
        source = GgufSource(renamed, load_config(renamed))
    assert source.plan is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "not streamed" in lines[0] and "renames" in lines[0], lines
    got = source.write(load_tokenizer(renamed), tmp_path / "fallback.gguf", "F16", "m", {"source": "x"}).read_bytes()
    assert got == _reference(src, tmp_path / "ref.gguf", "F16")


def test_load_dtype_that_rounds_falls_back(make_tiny_hf, tmp_path, one_torch_thread):
    from edgekit.loading import LoadOptions, using

    bf16 = _resave(make_tiny_hf("llama"), tmp_path / "bf16", dtype=torch.bfloat16)
    with using([bf16], LoadOptions(dtype="float16")):
        plan, why = stream_plan(bf16, load_config(bf16))
    assert plan is None and "--dtype float16" in why
    with using([bf16], LoadOptions(dtype="bfloat16")):
        assert stream_plan(bf16, load_config(bf16))[0] is not None  # loading in the stored dtype is exact


def test_truncated_safetensors_is_one_input_error_naming_the_file(make_tiny_hf, tmp_path, one_torch_thread):
    broken = Path(shutil.copytree(make_tiny_hf("llama"), tmp_path / "broken"))
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(InputError, match=r"broken/model\.safetensors") as exc:
        stream_plan(broken, load_config(broken))
    assert "\n" not in str(exc.value)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"broken/model\.safetensors"):
        export_gguf(broken, out, ["F16"], imatrix=None, progress=False)
    assert not (out / "broken-F16.gguf").exists()


def test_missing_shard_is_one_input_error_naming_the_shard(make_tiny_hf, tmp_path, one_torch_thread):
    sharded = _resave(make_tiny_hf("llama"), tmp_path / "sharded", shard="300KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    gone = sorted(set(index["weight_map"].values()))[1]
    (sharded / gone).unlink()
    with pytest.raises(InputError, match=re.escape(gone)) as exc:
        stream_plan(sharded, load_config(sharded))
    assert "\n" not in str(exc.value) and "missing" in str(exc.value)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=re.escape(gone)):
        export_gguf(sharded, out, ["F32"], imatrix=None, progress=False)
    assert not (out / "sharded-F32.gguf").exists()


def test_blocks_stay_bounded(make_tiny_hf, tmp_path, one_torch_thread, monkeypatch):
    """No read is larger than one block of rows, except a rotary-permuted q/k matrix (read whole)."""
    import edgekit.export.gguf_stream as stream
    from edgekit.export.checkpoint import Checkpoint

    limit, sizes = 4096, []
    real = Checkpoint.read

    def read(self, name, rows=None):
        data = real(self, name, rows)
        sizes.append((name, data.numel()))
        return data

    monkeypatch.setattr(stream, "CHUNK_ELEMENTS", limit)
    monkeypatch.setattr(Checkpoint, "read", read)
    _streamed(make_tiny_hf("llama"), tmp_path / "m.gguf", "F16")
    whole = [n for n, size in sizes if size > limit]
    assert whole and all(n.endswith(("q_proj.weight", "k_proj.weight")) for n in whole), whole
    assert {n for n, _ in sizes} >= {"model.embed_tokens.weight", "lm_head.weight"}


def test_a_folder_without_safetensors_falls_back(tmp_path):
    plan, why = stream_plan(tmp_path / "no-such-folder", None)
    assert plan is None and "not a folder" in why
    (tmp_path / "empty").mkdir()
    plan, why = stream_plan(tmp_path / "empty", None)
    assert plan is None and "no safetensors" in why
