"""ONNX Runtime GenAI packages: fp32 parity with PyTorch per family, int4 against a profile, runtime, refusals.

Each export runs onnxruntime-genai's model builder in a child process (~10 s per package here), so
packages are built once per module. Tiny models use intermediate_size 768: with the 512-token test
tokenizers a 512-wide projection would be taken for the LM head by the builder (see
``unsupported_reason``), which is exactly what the refusal tests check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekit
from edgekit.errors import ConfigError, InputError, UnsupportedModelError
from edgekit.export.onnx import export_onnx
from edgekit.export.onnx_genai import BuilderOptions, unsupported_reason
from edgekit.export.verify import verify_artifact
from edgekit.models import save_model

og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed")

WIDE = {"intermediate_size": 768}  # != the 512-token vocabulary (see module docstring)
PROMPTS = ["def main():\n    ", "The os module", "import sys\nfor line in sys.stdin:"]

# Published configs (their config.json, shrunk to tiny widths; the fields the builder reads kept).
GEMMA3_1B = {
    "architectures": ["Gemma3ForCausalLM"],
    "model_type": "gemma3_text",
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-6,
    "rope_local_base_freq": 10000.0,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": 512,
    "sliding_window_pattern": 6,
    "max_position_embeddings": 32768,
    "final_logit_softcapping": None,
    "attn_logit_softcapping": None,
}
PHI3_MINI_128K = {
    "architectures": ["Phi3ForCausalLM"],
    "model_type": "phi3",
    "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "sliding_window": 262144,
    "tie_word_embeddings": False,
}
TINY = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
}


def _tiny_from_published(published: dict, tokenizer, folder: Path, **extra) -> Path:
    """A random-weight HF folder of a published family, shrunk to ``TINY`` widths."""
    from transformers import AutoConfig, AutoModelForCausalLM

    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    fields = {k: v for k, v in {**published, **TINY, **ids, **extra}.items() if k != "model_type"}
    config = AutoConfig.for_model(published["model_type"], **fields)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return save_model(model, tokenizer, folder)


def _phi3_longrope(head_dim: int = 64) -> dict:
    half = head_dim // 2
    scaling = {
        "type": "longrope",
        "long_factor": [1.0 + 0.5 * i for i in range(half)],
        "short_factor": [1.0 + 0.01 * i for i in range(half)],
    }
    return {**PHI3_MINI_128K, "rope_scaling": scaling}


@pytest.fixture(scope="module")
def sources(make_tiny_hf, bpe_tokenizer, tmp_path_factory) -> dict[str, Path]:
    """Tiny HF folders for the package tests (per-family parity: tests/test_onnx_families.py)."""
    return {arch: make_tiny_hf(arch, **WIDE) for arch in ("llama", "qwen2")}


@pytest.fixture(scope="module")
def fp32_packages(sources, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("packages")
    return {arch: export_onnx(src, root / arch, ["fp32"], progress=False)[0] for arch, src in sources.items()}


@pytest.fixture(scope="module")
def trained_wide(bpe_tokenizer, tmp_path_factory) -> Path:
    """A tiny Llama after a few seconds of training, so int4 has peaked distributions to keep."""
    from edgekit.data import builtin_documents, pack, split_documents, tokenize_documents
    from edgekit.models import TinySpec, tiny_model

    tok = bpe_tokenizer
    model = tiny_model(TinySpec(arch="llama", vocab_size=len(tok), **WIDE))
    model.config.bos_token_id, model.config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    train, _ = split_documents(builtin_documents()[:600])
    rows = pack(tokenize_documents(tok, train), 64, 256)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):
        batch = rows[(step * 8) % (len(rows) - 8) :][:8]
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    return save_model(model.eval(), tok, tmp_path_factory.mktemp("trained-wide") / "model")


# ---- refusals (no builder run) ---------------------------------------------------------------------
def test_unsupported_reason_is_none_for_supported_published_configs():
    from published_configs import LLAMA_32_1B, QWEN_25_05B

    assert unsupported_reason(LLAMA_32_1B) is None
    assert unsupported_reason(QWEN_25_05B) is None
    assert unsupported_reason({**_phi3_longrope(), **TINY, "num_key_value_heads": 4}) is None  # Phi-3-mini: MHA


def test_unsupported_reason_names_family_when_builder_lacks_it():
    assert "Olmo2ForCausalLM" in unsupported_reason({"architectures": ["Olmo2ForCausalLM"], **TINY})
    assert unsupported_reason({**GEMMA3_1B, **TINY, "head_dim": 64}) is None  # exported (onnx_builder_child)
    assert "no exporter" in unsupported_reason({"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox"})


def test_unsupported_reason_refuses_projection_as_wide_as_vocab():
    reason = unsupported_reason({"architectures": ["LlamaForCausalLM"], **TINY, "intermediate_size": 512})
    assert reason and "intermediate_size equals vocab_size (512)" in reason


def test_preflight_refuses_onnx_target_before_training_when_family_unsupported():
    from transformers import AutoConfig

    from edgekit.pipeline.preflight import check_exportable

    config = AutoConfig.for_model("olmo2", **TINY)
    config.architectures = ["Olmo2ForCausalLM"]
    with pytest.raises(UnsupportedModelError, match="Olmo2ForCausalLM"):
        check_exportable(config, {"gguf": ["Q4_K_M"], "onnx": ["int4"]}, "teacher")
    check_exportable(config, {"gguf": ["Q4_K_M"], "onnx": []}, "teacher")  # no ONNX planned: no refusal


def test_export_refuses_before_writing_when_level_or_options_bad(sources, tmp_path):
    with pytest.raises(ConfigError, match="fp8"):
        export_onnx(sources["llama"], tmp_path / "a", ["fp8"])
    with pytest.raises(ConfigError, match="block_size"):
        export_onnx(sources["llama"], tmp_path / "b", ["int4"], options=BuilderOptions(block_size=48))
    with pytest.raises(ConfigError, match="onnx provider"):
        export_onnx(sources["llama"], tmp_path / "c", ["int4"], options=BuilderOptions(provider="tpu"))
    with pytest.raises(InputError, match="not found"):
        export_onnx(tmp_path / "nope", tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_export_refuses_tiny_model_whose_mlp_is_as_wide_as_vocab(make_tiny_hf, tmp_path):
    with pytest.raises(UnsupportedModelError, match="LM head"):
        export_onnx(make_tiny_hf("llama"), tmp_path / "out", ["fp32"])
    assert not (tmp_path / "out" / "onnx-fp32").exists()


# ---- fp32 parity per family: tests/test_onnx_families.py (parametrized over the registry) -------------
@pytest.mark.integration
def test_package_holds_genai_files_and_sidecar_and_no_temporaries(fp32_packages):
    folder = fp32_packages["llama"]
    names = {p.name for p in folder.iterdir()}
    assert {"genai_config.json", "model.onnx", "tokenizer.json", "edgekit-artifact.json"} <= names
    sidecar = json.loads((folder / "edgekit-artifact.json").read_text())
    assert (sidecar["route"], sidecar["quantization"], sidecar["execution_provider"]) == (
        "onnxruntime-genai",
        "fp32",
        "cpu",
    )
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.integration
def test_package_runs_in_onnxruntime_genai_untouched_and_greedy_equals_edgekit_load(fp32_packages):
    """The same greedy ids from a plain ORT GenAI loop (no edgekit code) and from ``edgekit.load``."""
    folder = fp32_packages["qwen2"]
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    tokenizer.update_options(add_special_tokens="true")
    with edgekit.load(folder) as edge:
        for prompt in PROMPTS:
            ids = tokenizer.encode(prompt)
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=len(ids) + 24, do_sample=False)
            generator = og.Generator(model, params)
            generator.append_tokens(ids)
            plain = []
            while not generator.is_done():
                generator.generate_next_token()
                plain.append(int(generator.get_next_tokens()[0]))
            plain = [t for t in plain if t not in edge.eos_token_ids]
            assert edge.prompt_ids(prompt) == [int(i) for i in ids]
            assert edge.generate_ids(prompt, max_tokens=24) == plain
            assert edge.generate(prompt, max_tokens=24) == tokenizer.decode(np.asarray(plain, dtype=np.int32))


@pytest.mark.integration
def test_edgekit_load_streams_chats_and_scores_an_onnx_package(fp32_packages):
    with edgekit.load(fp32_packages["llama"]) as model:
        assert model.info.format == "onnx" and model.info.extra["runtime"] == "onnxruntime-genai"
        assert model.info.quantization == "fp32" and model.info.parameters > 500_000
        text = model.generate("The os module", max_tokens=16, ignore_eos=True)
        assert "".join(model.stream("The os module", max_tokens=16, ignore_eos=True)) == text
        assert model.last_stats.generated_tokens == 16
        chat = model.generate([{"role": "user", "content": "hi"}], max_tokens=8)
        assert isinstance(chat, str)
        scores = model.logprobs("import os\nprint(os.getcwd())")
        assert len(scores) == len(model.tokenize("import os\nprint(os.getcwd())")) - 1
        assert all(s <= 0 for _, s in scores)
        a = model.generate("def f", max_tokens=12, temperature=0.9, seed=7, ignore_eos=True)
        b = model.generate("def f", max_tokens=12, temperature=0.9, seed=7, ignore_eos=True)
        assert a == b


@pytest.mark.integration
def test_verify_gate_fails_tokenizer_parity_when_ort_genai_cannot_read_a_prepend_normalizer(make_tiny_hf, tmp_path):
    """ORT GenAI's tokenizer ignores tokenizers' ``Prepend("▁")`` normalizer (Llama-2 / Mistral style tokenizer.json):
    the model agrees with PyTorch, the token ids do not, and the gate says so instead of shipping it."""
    source = make_tiny_hf("mistral", "sp", **WIDE)
    (folder,) = export_onnx(source, tmp_path, ["fp32"], progress=False)
    report = verify_artifact(folder, source, level="fp32", max_tokens=256)
    assert report.mean_kl <= 1e-5 and report.top1 == 1.0
    assert not report.tokenizer_parity and not report.passed


@pytest.mark.integration
def test_bench_harness_measures_an_onnx_package_like_a_gguf(fp32_packages):
    from edgekit.bench.child import measure

    spec = {"artifact": str(fp32_packages["llama"]), "options": {"n_threads": 2}, "prompt_lengths": [64, 256]}
    result = measure({**spec, "new_tokens": 16, "warmup": 1, "repeats": 2})
    assert (result["format"], result["quant"], result["decode_tokens"]) == ("onnx", "fp32", 16)
    assert result["decode_tokens_per_s"]["median"] > 0 and result["ttft_s"]["median"] > 0
    assert set(result["prefill_tokens_per_s"]) == {"64", "256"} and result["peak_rss_bytes"] > 0
    assert result["load_time_s"]["n"] == 2


@pytest.mark.integration
def test_genai_backend_refuses_ids_outside_vocab_or_context_with_input_error(fp32_packages):
    from edgekit.runtime.base import SamplingParams
    from edgekit.runtime.onnxruntime import GenaiBackend

    backend = GenaiBackend(fp32_packages["llama"])
    assert backend.logits([5] * backend.n_ctx).shape == (backend.n_ctx, 512)
    for ids, message in (([5] * (backend.n_ctx + 1), "exceeds the context"), ([600], "outside the vocabulary")):
        with pytest.raises(InputError, match=message):
            backend.logits(ids)
    with pytest.raises(InputError, match="outside the vocabulary"):
        list(backend.generate_ids([-1], 4, SamplingParams()))


@pytest.mark.integration
def test_damaged_package_is_refused_with_input_error(fp32_packages, tmp_path):
    import shutil

    folder = shutil.copytree(fp32_packages["llama"], tmp_path / "pkg")
    (folder / "model.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match=r"model\.onnx"):
        edgekit.load(folder)


# ---- int4 against a target profile ------------------------------------------------------------------------
@pytest.mark.integration
def test_int4_package_passes_laptop_profile_thresholds_when_exported_with_its_settings(trained_wide, tmp_path):
    from edgekit.targets import load_target

    profile = load_target("x86-laptop")
    (folder,) = export_onnx(trained_wide, tmp_path, ["int4"], options=profile.export.onnx.builder_options())
    report = verify_artifact(folder, trained_wide, level="int4", threshold=profile.verify.threshold, max_tokens=512)
    assert report.passed, report.table()
    sidecar = json.loads((folder / "edgekit-artifact.json").read_text())
    assert sidecar["int4"]["block_size"] == 32 and sidecar["int4"]["accuracy_level"] == 4
    fp32_bytes = sum(p.stat().st_size for p in trained_wide.glob("*.safetensors"))
    assert sidecar["weights_bytes"] < 0.4 * fp32_bytes


# ---- families: what the refusal claims is what the builder does ----------------------------------------------
@pytest.mark.integration
def test_plain_builder_still_needs_gemma3_config_made_flat(bpe_tokenizer, tmp_path):
    """The builder alone still stops on transformers 5's Gemma 3 config; through onnx_builder_child the
    published 1B shape exports and matches PyTorch. If the first half fails, a newer onnxruntime-genai
    reads the nested config: drop the flattening in ``onnx_builder_child``."""
    import subprocess
    import sys

    from edgekit.runtime.onnxruntime import GenaiBackend

    source = _tiny_from_published(GEMMA3_1B, bpe_tokenizer, tmp_path / "gemma3", num_key_value_heads=1, head_dim=64)
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(tmp_path / "raw")]
    command += ["-p", "fp32", "-e", "cpu", "-c", str(tmp_path / "cache"), "--extra_options", "hf_token=false"]
    plain = subprocess.run(command, capture_output=True, text=True, check=False)
    assert plain.returncode != 0 and "KeyError: 'rope_type'" in plain.stderr + plain.stdout
    (folder,) = export_onnx(source, tmp_path / "out", ["fp32"], progress=False)
    ids = np.random.default_rng(0).integers(3, 500, 600).tolist()  # past the 512-token window
    from edgekit.models import load_model
    from edgekit.quality import compare_logits

    with torch.no_grad():
        ref = load_model(source)(input_ids=torch.tensor([ids])).logits[0].numpy()
    cmp = compare_logits(ref[:-1], GenaiBackend(folder).logits(ids)[:-1], np.asarray(ids[1:]))
    assert cmp.mean_kl <= 1e-5 and cmp.top1 == 1.0


@pytest.mark.integration
def test_phi3_longrope_package_matches_pytorch_beyond_original_context(bpe_tokenizer, tmp_path):
    """Phi-3-mini-128k's shape (as many KV heads as query heads), 4200 tokens: past the 4096 original context."""
    from edgekit.models import load_model
    from edgekit.quality import compare_logits
    from edgekit.runtime.onnxruntime import GenaiBackend

    source = _tiny_from_published(_phi3_longrope(), bpe_tokenizer, tmp_path / "phi3", num_key_value_heads=4)
    (folder,) = export_onnx(source, tmp_path / "out", ["fp32"], progress=False)
    ids = np.random.default_rng(0).integers(3, 500, 4200).tolist()
    got = GenaiBackend(folder).logits(ids)
    with torch.no_grad():
        ref = load_model(source)(input_ids=torch.tensor([ids])).logits[0].numpy()
    cmp = compare_logits(ref[:-1], got[:-1], np.asarray(ids[1:]))
    assert cmp.mean_kl <= 1e-5 and cmp.top1 == 1.0


@pytest.mark.integration
def test_builder_still_takes_a_fused_qkv_as_wide_as_vocab_for_the_lm_head(bpe_tokenizer, tmp_path):
    """Phi-3 with 4 query / 2 KV heads of 64: qkv_proj has 512 rows = the vocabulary. If a newer
    onnxruntime-genai gets this right, this fails: drop the fused widths in ``_lm_head_lookalike``."""
    from edgekit.export.onnx_genai import _run_builder
    from edgekit.models import load_model
    from edgekit.quality import compare_logits
    from edgekit.runtime.onnxruntime import GenaiBackend

    source = _tiny_from_published(_phi3_longrope(), bpe_tokenizer, tmp_path / "phi3", num_key_value_heads=2)
    assert "qkv_proj rows" in unsupported_reason(load_model(source).config)
    _run_builder(source, tmp_path / "out", tmp_path / "cache", "fp32", BuilderOptions(), tmp_path / "log")
    ids = np.random.default_rng(0).integers(3, 500, 64).tolist()
    got = GenaiBackend(tmp_path / "out").logits(ids)
    with torch.no_grad():
        ref = load_model(source)(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert compare_logits(ref, got, np.asarray([*ids[1:], 0])).mean_kl > 1e-3


def test_optimum_route_names_its_extra_and_writes_nothing_when_optimum_missing(sources, tmp_path):
    import importlib.util

    from edgekit.errors import BackendUnavailable

    if importlib.util.find_spec("optimum") is not None:
        pytest.skip("optimum is installed here: the route's own tests cover it")
    with pytest.raises(BackendUnavailable, match="optimum extra"):
        export_onnx(sources["llama"], tmp_path / "out", ["int4"], route="optimum")
    assert not (tmp_path / "out").exists()
