"""The byte-budget allocator: fits the budget, prefers llama.cpp's mix without evidence, finds gains."""

from __future__ import annotations

import random

import pytest

from edgekit.export.allocate import Option, allocate, bpw_budget, tensor_bytes, type_overrides

TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0")
BPW = {t: tensor_bytes(t, 256) * 8 / 256 for t in TYPES}  # 2.625 ... 8.5


def _model(sizes: dict[str, int], kl_of) -> dict[str, list[Option]]:
    """Options for every tensor and type, with KL from ``kl_of(name, type, n_weights)``."""
    return {name: [Option(t, False, tensor_bytes(t, n), kl_of(name, t, n)) for t in TYPES] for name, n in sizes.items()}


SIZES = {f"blk.{i}.{role}.weight": n for i in range(4) for role, n in (("attn_v", 65536), ("ffn_down", 262144))}
SIZES |= {"token_embd.weight": 1048576, "output.weight": 1048576}
# a Q4_K_M-like preset: Q4_K, with attn_v / ffn_down of half the layers and the output at Q6_K
PRESET = {name: ("Q6_K" if name.startswith(("blk.0", "blk.1", "output")) else "Q4_K", False) for name in SIZES}


def _preset_bytes(options, preset) -> int:
    return sum(next(o for o in options[n] if o.key == key).nbytes for n, key in preset.items())


def test_tensor_bytes_and_budget():
    assert tensor_bytes("Q4_K", 512) == 288  # 2 super-blocks of 144 bytes: 4.5 bits per weight
    assert tensor_bytes("Q8_0", 64) == 68
    assert bpw_budget(4.5, 1000) == 562
    with pytest.raises(ValueError, match="blocks"):
        tensor_bytes("Q4_K", 100)


def test_returns_the_preset_when_every_byte_buys_the_same_kl_everywhere():
    # equally sensitive: KL falls linearly with the bytes spent, at the same rate in every tensor
    options = _model(SIZES, lambda name, t, n: n * (10.0 - BPW[t]) * 1e-9)
    budget = _preset_bytes(options, PRESET)
    chosen = allocate(options, PRESET, budget)
    assert {name: o.key for name, o in chosen.choice.items()} == PRESET


def test_returns_the_preset_when_no_tensor_is_sensitive():
    options = _model(SIZES, lambda name, t, n: 1e-6)
    chosen = allocate(options, PRESET, _preset_bytes(options, PRESET))
    assert {name: o.key for name, o in chosen.choice.items()} == PRESET


def test_moves_bits_to_the_sensitive_tensor():
    # the embedding is 100x as sensitive per weight as everything else
    def kl(name, t, n):
        return n * 2.0 ** -(2 * BPW[t]) * (100.0 if name == "token_embd.weight" else 1.0)

    options = _model(SIZES, kl)
    budget = _preset_bytes(options, PRESET)
    chosen = allocate(options, PRESET, budget)
    assert chosen.nbytes <= budget
    assert chosen.kl < 0.5 * chosen.preset_kl
    assert BPW[chosen.choice["token_embd.weight"].ggml_type] > BPW["Q4_K"]


@pytest.mark.parametrize("seed", range(30))
def test_never_exceeds_the_budget_and_never_estimates_worse_than_the_preset(seed):
    rng = random.Random(seed)
    weights = {name: rng.lognormvariate(0, 2) for name in SIZES}
    options = _model(SIZES, lambda name, t, n: weights[name] * n * 2.0 ** -(2 * BPW[t]) * rng.uniform(0.5, 2))
    preset_bytes = _preset_bytes(options, PRESET)
    for budget in (int(preset_bytes * f) for f in (0.8, 0.95, 1.0, 1.2)):
        chosen = allocate(options, PRESET, budget)
        assert chosen.nbytes <= budget
        if budget >= preset_bytes:
            assert chosen.kl <= chosen.preset_kl
    smallest = sum(min(o.nbytes for o in opts) for opts in options.values())
    assert allocate(options, None, smallest).nbytes == smallest
    with pytest.raises(ValueError, match="over the budget"):
        allocate(options, None, smallest - 1)


def test_matches_brute_force_on_a_small_model():
    import itertools

    rng = random.Random(1)
    sizes = {f"t{i}": 256 * rng.choice((1, 4, 16)) for i in range(5)}
    options = {
        n: [o for o in opts if o.ggml_type in ("Q4_K", "Q6_K", "Q8_0")]
        for n, opts in _model(sizes, lambda name, t, n: rng.uniform(0.1, 1) * n * 2.0 ** -BPW[t]).items()
    }
    budget = sum(tensor_bytes("Q5_K", n) for n in sizes.values())
    best = min(
        (sum(c.kl for c in combo), combo)
        for combo in itertools.product(*options.values())
        if sum(c.nbytes for c in combo) <= budget
    )
    chosen = allocate(options, None, budget)
    assert chosen.kl <= best[0] * 1.05  # Lagrangian + greedy fill: within 5% of the optimum here


def test_overrides_are_anchored_per_tensor():
    options = _model({"blk.0.attn_v.weight": 256}, lambda *a: 1.0)
    chosen = allocate(options, {"blk.0.attn_v.weight": ("Q4_K", False)}, 10**6)
    assert type_overrides(chosen) == {r"^blk\.0\.attn_v\.weight$": "Q4_K"}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--bpw", "4,abc"], "--bpw"),
        (["--bpw", "1.5"], "between 2 and 16"),
        (["--allocate", "guess"], "--allocate"),
        (["--allocate", "none", "--bpw", "4"], "sensitivity allocation"),
    ],
)
def test_cli_refuses_bad_allocation_flags_before_loading_anything(tmp_path, args, words):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "edgekit", "export", str(tmp_path / "missing-model"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    assert "missing-model" not in result.stderr  # the flag is judged before the model is looked for
