"""Build the good artifacts the hostile cases start from, and the damaged copies they use.

``build(root)`` writes everything under ``root`` once (a marker file says it is complete): a tiny HF
model folder, its F32 GGUF, a bundle holding that GGUF, a trainer checkpoint, and one damaged copy
per case. Everything is made by edgekit itself from a random tiny model; nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

DONE = ".fixtures-complete"


def build(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if (root / DONE).is_file():
        return root
    hf = _hf_model(root / "hf")
    gguf = _gguf(hf, root / "gguf")
    _gguf_damage(gguf, root / "bad-gguf")
    _safetensors_damage(hf, root / "bad-st")
    _bundle(hf, gguf, root / "bundle")
    _templates(gguf, root / "tpl")
    _configs(root / "cfg")
    _checkpoint(hf, root / "ckpt")
    (root / DONE).write_text("ok\n")
    return root


def _hf_model(folder: Path) -> Path:
    import torch

    from edgekit.data import builtin_documents
    from edgekit.models import TinySpec, save_model, tiny_model
    from edgekit.tokenizer import train_byte_level_bpe

    torch.manual_seed(0)
    tok = train_byte_level_bpe(builtin_documents()[:400], vocab_size=512)
    model = tiny_model(TinySpec(arch="llama", vocab_size=len(tok)))
    model.config.bos_token_id, model.config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    return save_model(model, tok, folder)


def _gguf(hf: Path, out: Path) -> Path:
    from edgekit.export.gguf import export_gguf

    (path,) = export_gguf(hf, out, ["F32"], name="good", progress=False)
    return path


def _gguf_damage(good: Path, out: Path) -> None:
    import gguf

    from tests.hostile.mutate import flip_bytes, replace_once, rewrite_gguf

    v = gguf.GGUFValueType
    out.mkdir(parents=True, exist_ok=True)
    fields = {
        "blocks-1000": {"llama.block_count": (1000, v.UINT32)},
        "blocks-0": {"llama.block_count": (0, v.UINT32)},
        "blocks-1": {"llama.block_count": (1, v.UINT32)},
        "heads-0": {"llama.attention.head_count": (0, v.UINT32)},
        "kv-heads-0": {"llama.attention.head_count_kv": (0, v.UINT32)},
        "heads-not-multiple": {"llama.attention.head_count": (3, v.UINT32)},
        "context-string": {"llama.context_length": ("4096", v.STRING)},
        "context-0": {"llama.context_length": (0, v.UINT32)},
        "embedding-mismatch": {"llama.embedding_length": (128, v.UINT32)},
        "rope-dims-too-big": {"llama.rope.dimension_count": (4096, v.UINT32)},
        "eps-nan": {"llama.attention.layer_norm_rms_epsilon": (float("nan"), v.FLOAT32)},
        "short-token-types": {"tokenizer.ggml.token_type": ([1] * 10, v.ARRAY, v.INT32)},
        "short-scores": {"tokenizer.ggml.scores": ([0.0] * 10, v.ARRAY, v.FLOAT32)},
        "eos-past-vocab": {"tokenizer.ggml.eos_token_id": (99999, v.UINT32)},
        "bos-past-vocab": {"tokenizer.ggml.bos_token_id": (512, v.UINT32)},
        "one-token-vocab": {"tokenizer.ggml.tokens": (["a"], v.ARRAY, v.STRING)},
        "architecture-int": {"general.architecture": (7, v.UINT32)},
    }
    for name, change in fields.items():
        rewrite_gguf(good, out / f"{name}.gguf", fields=change)
    rewrite_gguf(good, out / "missing-tensor.gguf", drop_tensors=("blk.1.attn_k.weight",))
    rewrite_gguf(good, out / "missing-embedding.gguf", drop_tensors=("token_embd.weight",))
    bad_template = out / "template-bad-byte.gguf"
    shutil.copy(good, bad_template)
    replace_once(bad_template, b"{% for message in messages %}", b"{% for messag\xff in messages %}")
    raw = good.read_bytes()
    (out / "truncated.gguf").write_bytes(raw[: len(raw) // 2])
    (out / "header-only.gguf").write_bytes(raw[:64])
    (out / "empty.gguf").write_bytes(b"")
    (out / "magic-then-noise.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 40)
    flipped = out / "tensor-table-flipped.gguf"
    shutil.copy(good, flipped)
    flip_bytes(flipped, 24, 200)


def _safetensors_damage(hf: Path, out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    key = "model.layers.0.self_attn.q_proj.weight"
    edits = {
        "renamed": lambda t: t.update({key.replace("q_proj", "q_projX"): t.pop(key)}),
        "dropped": lambda t: t.pop(key),
        "extra": lambda t: t.update({"bogus.weight": torch.zeros(3)}),
        "wrong-shape": lambda t: t.update({key: t[key][:, :-1].contiguous()}),
    }
    for name, edit in edits.items():
        folder = out / name
        shutil.copytree(hf, folder)
        tensors = load_file(folder / "model.safetensors")
        edit(tensors)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    truncated = out / "truncated"
    shutil.copytree(hf, truncated)
    raw = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(raw[: len(raw) * 2 // 3])
    garbage = out / "header-garbage"
    shutil.copytree(hf, garbage)
    (garbage / "model.safetensors").write_bytes((64).to_bytes(8, "little") + b"\xff" * 64 + b"\0" * 100)


def _bundle(hf: Path, gguf: Path, bundle: Path) -> None:
    from edgekit.pipeline.bundle import write_bundle
    from edgekit.targets import resolve_target_path

    artifact = {"path": gguf.name, "format": "gguf", "quant": "F32", "file_size_bytes": gguf.stat().st_size}
    write_bundle(
        bundle,
        export_dir=gguf.parent,
        artifacts=[artifact],
        model_dir=hf,
        target_file=resolve_target_path("raspberry-pi-5"),
        report_dir=None,
        manifest={
            "target": "raspberry-pi-5",
            "teacher": {"source": "demo"},
            "student": {"parameters": 1},
            "stages": [{"name": "export", "key": "k", "seconds": 1.0, "skipped": False}],
            "artifacts": [{**artifact, "verification": {"passed": True, "mean_kl": 0.0, "top1": 1.0}, "bench": None}],
            "recommended": {"artifact": gguf.name, "quant": "F32", "basis": "size", "reason": "only one"},
        },
    )


# chat templates a model file could carry; each must end in a clean error, never a hang or 2 GiB
TEMPLATES = {
    "multiply-2-31": "{{ 'x' * 2**31 }}",
    "nested-range-empty": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested-range-output": "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}",
    "power": "{{ 7 ** 99999999 }}",
    "namespace-doubling": (
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
    ),
    "list-doubling": (
        "{% set ns = namespace(s=[1]) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}"
    ),
    "recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "ljust": "{{ 'x'.ljust(1000000000) }}",
    "center-filter": "{{ 'x'|center(1000000000) }}",
    "format-width": "{{ '{:>999999999}'.format(1) }}",
    "sandbox-escape": "{{ cycler.__init__.__globals__.os.system('touch /tmp/edgekit-hostile-pwned') }}",
    "raise-exception": "{{ raise_exception('no chat for you') }}",
    "syntax-error": "{% for m in messages %}{{ m.content }",
}


def _templates(good: Path, out: Path) -> None:
    import gguf

    from tests.hostile.mutate import rewrite_gguf

    out.mkdir(parents=True, exist_ok=True)
    for name, text in TEMPLATES.items():
        change = {"tokenizer.chat_template": (text, gguf.GGUFValueType.STRING)}
        rewrite_gguf(good, out / f"{name}.gguf", fields=change)


PROFILE_EDITS = {
    "inf-bandwidth": ("memory_bandwidth_gbs = 17 ", "memory_bandwidth_gbs = inf "),
    "inf-memory": ("memory_mb = 5000", "memory_mb = inf"),
    "nan-memory-gb": ("memory_gb = 8", "memory_gb = nan"),
    "threads-true": ("threads = 4", "threads = true"),
    "threads-float": ("threads = 4", "threads = 4.0"),
    "imatrix-string": ('formats = ["gguf"]', 'formats = ["gguf"]\nimatrix = "yes"'),
    "empty-ladder": ('gguf_ladder = ["Q4_K_M", "Q5_K_M", "Q8_0"]', "gguf_ladder = []"),
    "negative-cores": ("cpu_cores = 4", "cpu_cores = -4"),
    "unknown-key": ("[runtime]", "[runtime]\nturbo = true"),
}


def _configs(out: Path) -> None:
    from edgekit.targets import resolve_target_path

    out.mkdir(parents=True, exist_ok=True)
    base = resolve_target_path("raspberry-pi-5").read_text(encoding="utf-8")
    for name, (old, new) in PROFILE_EDITS.items():
        assert old in base, (name, old)
        (out / f"profile-{name}.toml").write_text(base.replace(old, new, 1), encoding="utf-8")
    (out / "profile-utf16.toml").write_bytes(base.encode("utf-16"))
    (out / "profile-binary.toml").write_bytes(bytes(range(256)) * 8)
    (out / "profile-bomb.toml").write_text("a = " + "[" * 100000 + "]" * 100000)
    (out / "profile-inline-bomb.toml").write_text("a = " + "{b = " * 50000 + "1" + "}" * 50000)
    (out / "profile-huge.toml").write_text("# " + "x" * (3 << 20))
    configs = {
        "lr-inf": "[distill]\nlr = inf\n",
        "lr-nan": "[distill]\nlr = nan\n",
        "steps-true": "[distill]\nsteps = true\n",
        "trust-remote-code-yes": '[teacher]\ntrust_remote_code = "yes"\n',
        "unknown-suite": '[bench]\nsuite = "no-such-suite"\n',
        "empty-gguf-levels": "[export]\ngguf_levels = []\n",
        "enabled-string": '[prune]\nenabled = "false"\n',
        "batch-float": "[distill]\nbatch_size = 8.5\n",
    }
    for name, text in configs.items():
        (out / f"build-{name}.toml").write_text(text, encoding="utf-8")
    (out / "build-utf16.toml").write_bytes("[distill]\nsteps = 3\n".encode("utf-16"))
    (out / "build-binary.toml").write_bytes(b"\x00\x01\x02" * 100)
    (out / "build-bomb.toml").write_text("x = " + "[" * 100000 + "]" * 100000)


def _checkpoint(hf: Path, out: Path) -> None:
    import torch

    from edgekit.distill.checkpoint import LATEST, save_checkpoint
    from edgekit.models import load_model

    model = load_model(hf)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss
    loss.backward()
    opt.step()
    history = [{"step": 1, "loss": float(loss)}, {"step": 2, "loss": float(loss)}]
    save_checkpoint(out / "good", 2, model, opt, history)

    def variant(name: str) -> Path:
        shutil.copytree(out / "good", out / name)
        return out / name / LATEST

    raw = (out / "good" / LATEST / "model.safetensors").read_bytes()
    (variant("truncated") / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    state = json.loads((out / "good" / LATEST / "state.json").read_text())
    (variant("step-1e9") / "state.json").write_text(json.dumps({**state, "step": 10**9}))
    (variant("step-string") / "state.json").write_text(json.dumps({**state, "step": "2"}))
    (variant("state-garbage") / "state.json").write_bytes(b"\xff\xfe{{{")
    (variant("no-model") / "model.safetensors").unlink()
    other = variant("other-model")
    from safetensors.torch import load_file, save_file

    tensors = load_file(other / "model.safetensors")
    tensors["model.norm.weight"] = torch.ones(7)
    save_file(tensors, other / "model.safetensors")
