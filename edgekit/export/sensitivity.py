"""How much each tensor's quantization moves the model's predictions, per candidate GGML type.

The quantized weights are llama.cpp's own: the F32 GGUF is quantized once per candidate type (every
tensor overridden to that type, with and without the importance matrix), each tensor read back and
dequantized with the ``gguf`` package, and put in place of the fp weight in the PyTorch model. The
type llama.cpp actually wrote is the one recorded, so its fallbacks for rows that K-quants cannot
hold (not a multiple of 256) are measured as what they are.

Two estimates of the mean KL (nats/token, fp model ‖ model with one tensor quantized):

- ``measure``: one forward pass over the calibration rows per tensor and type; exact on that text.
- ``fisher``: ½·Σ F·(Δw)² with F the diagonal Fisher information of the model's own sampled
  predictions (one backward pass per calibration row, then no forward pass per candidate); the
  second-order term of the KL, validated against ``measure`` in bench/bench_quant_alloc.py. It is
  the estimate for models where a forward pass per tensor and type costs too much.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgekit.export.allocate import Option, tensor_bytes

# Candidate types. K-quants need rows of 256 weights; for other widths llama.cpp substitutes its own
# fallback, which is then what gets measured (see module docstring).
CANDIDATES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "IQ4_NL", "Q5_0", "Q5_1")
FALLBACKS = {"IQ4_NL", "Q5_0", "Q5_1"}  # 32-weight blocks: probed only for rows K-quants cannot hold
NO_IMATRIX = {"Q8_0", "F16", "F32", "BF16"}  # llama.cpp does not use an importance matrix for these
MEASURE_LIMIT = 2e11  # forward-pass cost (weights x tokens x probes) up to which ``auto`` measures
MEASURE_TOKENS = 1024  # calibration tokens a measured probe runs on (a forward pass per tensor and type)


def measure_rows(rows: torch.Tensor) -> torch.Tensor:
    """The first calibration rows holding about MEASURE_TOKENS tokens (at least one row)."""
    return rows[: max(1, MEASURE_TOKENS // rows.shape[1])]


@dataclass
class Probe:
    """Per-tensor options with their estimated KL, and where each candidate file lies."""

    options: dict[str, list[Option]]
    files: dict[tuple[str, bool], Path]  # (requested type, imatrix) -> quantized GGUF
    method: str
    tokens: int
    n_weights: dict[str, int] = field(default_factory=dict)  # GGUF name -> weights


def weight_names(reader) -> dict[str, int]:
    """GGUF names of the 2-D weights llama.cpp quantizes -> number of weights."""
    return {t.name: int(t.n_elements) for t in reader.tensors if len(t.shape) >= 2 and t.name != "rope_freqs.weight"}


def dequantized(reader) -> Iterator[tuple[str, str, np.ndarray]]:
    """(name, GGML type, float32 [rows, cols]) for every 2-D tensor of a GGUF file."""
    import gguf

    for t in reader.tensors:
        if len(t.shape) < 2:
            continue
        kind = gguf.GGMLQuantizationType(t.tensor_type)
        rows = int(np.prod([int(d) for d in t.shape[1:]]))
        data = gguf.quants.dequantize(t.data, kind).reshape(rows, int(t.shape[0]))
        yield t.name, kind.name, data.astype(np.float32)


class TensorMap:
    """GGUF tensor name -> the PyTorch parameter it came from, and the row order between them.

    Found by matching the F32 GGUF's rows to the parameter's rows, so it holds whatever row
    permutation the writer applied (llama's q/k rotary layout) without knowing the family.
    """

    def __init__(self, model, base_reader):
        from edgekit.arch import family_of
        from edgekit.errors import UnsupportedModelError
        from edgekit.export.gguf import gguf_name

        family, n_blocks = family_of(model.config), model.config.num_hidden_layers
        params = dict(model.named_parameters(remove_duplicate=False))
        by_gguf = {}
        for hf_name in params:
            try:
                name = gguf_name(hf_name, family, n_blocks)
            except UnsupportedModelError:  # not a tensor the GGUF stores
                continue
            by_gguf.setdefault(name, hf_name)
        self.params: dict[str, torch.nn.Parameter] = {}
        self.rows: dict[str, np.ndarray | None] = {}
        for t in base_reader.tensors:
            if len(t.shape) < 2 or t.name not in by_gguf:
                continue
            param = params[by_gguf[t.name]]
            stored = np.asarray(t.data, dtype=np.float32).reshape(param.shape)
            self.params[t.name] = param
            self.rows[t.name] = _row_order(param.detach().float().cpu().numpy(), stored)

    def to_model(self, name: str, gguf_rows: np.ndarray) -> torch.Tensor:
        """A [rows, cols] array in GGUF row order -> a tensor shaped and ordered like the parameter."""
        order = self.rows[name]
        data = gguf_rows if order is None else gguf_rows[np.argsort(order)]
        return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).reshape(self.params[name].shape)


def _row_order(param: np.ndarray, stored: np.ndarray) -> np.ndarray | None:
    """None if the rows are stored as-is, else index with stored[i] == param[index[i]]."""
    if np.array_equal(param, stored):
        return None
    where = {row.tobytes(): i for i, row in enumerate(param)}
    try:
        return np.array([where[row.tobytes()] for row in stored])
    except KeyError:
        raise ValueError("a GGUF tensor's rows are not a permutation of its parameter's rows") from None


class KLMeter:
    """Mean KL(fp model ‖ current model) over calibration rows, in nats/token (float64 sums)."""

    def __init__(self, model, rows: torch.Tensor, batch: int = 4):
        self.model, self.rows, self.batch = model, rows, batch
        self.reference = [lp.float() for lp in self._log_probs()]
        self.baseline = 0.0
        self.baseline = self()  # float32 rounding of the stored reference, subtracted from every reading

    @torch.no_grad()
    def _log_probs(self) -> Iterator[torch.Tensor]:
        from edgekit.lowmem import fp32_compute

        with fp32_compute(self.model):  # a bf16-resident model computes as the fp32 one
            for start in range(0, len(self.rows), self.batch):
                logits = self.model(input_ids=self.rows[start : start + self.batch]).logits
                yield torch.log_softmax(logits.double(), dim=-1)

    def __call__(self) -> float:
        total, count = 0.0, 0
        for ref, cand in zip(self.reference, self._log_probs(), strict=True):
            ref = ref.double()
            total += float((ref.exp() * (ref - cand)).sum())
            count += ref.shape[0] * ref.shape[1]
        return total / count - self.baseline


def fisher_diagonal(model, rows: torch.Tensor, seed: int = 0) -> dict[int, torch.Tensor]:
    """Mean per-token diagonal Fisher information, {id(parameter): tensor like the parameter}.

    Labels are sampled from the model's own predictions, so E[g²] is the Fisher (the KL's Hessian
    at the fp weights), not the empirical one; one row per backward pass keeps cross-token terms
    at zero expectation. Each gradient is squared into its sum as soon as it is accumulated and
    then freed, so the pass holds the fp32 weights and the sums (8 bytes per weight), not a third
    copy for the gradients; a bf16-resident model is upcast for the pass and put back after.
    """
    from edgekit.lowmem import fp32_everywhere

    gen = torch.Generator().manual_seed(seed)
    sums: dict[int, torch.Tensor] = {}

    def accumulate(p: torch.Tensor) -> None:
        g2 = p.grad.detach().float() ** 2
        if id(p) in sums:
            sums[id(p)] += g2
        else:
            sums[id(p)] = g2
        p.grad = None

    model.zero_grad(set_to_none=True)
    with fp32_everywhere(model):
        hooks = [p.register_post_accumulate_grad_hook(accumulate) for p in model.parameters() if p.requires_grad]
        try:
            for row in rows:
                logits = model(input_ids=row[None]).logits[0].float()
                labels = torch.multinomial(torch.softmax(logits.detach(), -1), 1, generator=gen)[:, 0]
                torch.nn.functional.cross_entropy(logits, labels, reduction="sum").backward()
                del logits
        finally:
            for h in hooks:
                h.remove()
            model.zero_grad(set_to_none=True)
    return {k: v / rows.numel() for k, v in sums.items()}


def candidate_files(base: Path, workdir: Path, types, imatrix: dict | None) -> dict[tuple[str, bool], Path]:
    """Quantize the F32 ``base`` once per (type, imatrix used), every weight overridden to that type."""
    from edgekit.export.quantize import quantize_gguf

    files = {}
    for ggml_type in types:
        for use in (False, True) if imatrix and ggml_type not in NO_IMATRIX else (False,):
            path = workdir / f"probe-{ggml_type}-{'imatrix' if use else 'plain'}.gguf"
            quantize_gguf(base, path, "Q8_0", imatrix=imatrix if use else None, type_overrides={".": ggml_type})
            files[ggml_type, use] = path
    return files


def probe(
    model,
    base: Path,
    rows: torch.Tensor,
    *,
    imatrix: dict | None = None,
    types=CANDIDATES,
    method: str = "auto",
    workdir: Path | None = None,
    always: set[str] | frozenset[str] = frozenset(),
) -> Probe:
    """Estimated KL per GGUF weight and candidate (type, imatrix), from the F32 GGUF at ``base``.

    ``rows`` [n, seq] are the calibration tokens; ``method`` is measure, fisher or auto (measure
    while weights x tokens x probes ≤ MEASURE_LIMIT). ``workdir`` keeps the candidate files
    (default: a temporary folder beside ``base`` that lives as long as the returned Probe's files
    are needed — pass one to reuse them). ``always``: types probed for every tensor (a preset's),
    where FALLBACKS are otherwise probed only for rows that are not a multiple of 256.
    """
    import gguf

    workdir = Path(workdir or tempfile.mkdtemp(dir=base.parent, prefix=".probe-"))
    base_reader = gguf.GGUFReader(base)
    names = weight_names(base_reader)
    tmap = TensorMap(model, base_reader)
    files = candidate_files(base, workdir, types, imatrix)
    if method == "auto":
        cost = sum(names.values()) * measure_rows(rows).numel() * len(names) * (len(files) - len(FALLBACKS))
        method = "measure" if cost <= MEASURE_LIMIT else "fisher"
    if method == "measure":
        rows = measure_rows(rows)
        estimate = _measurer(model, rows, tmap)
    else:
        estimate = _fisher_estimator(model, rows, tmap)
    options: dict[str, list[Option]] = {name: [] for name in names}
    for (_, use), path in files.items():
        for name, kind, data in dequantized(gguf.GGUFReader(path)):
            if name not in tmap.params or any(o.key == (kind, use) for o in options[name]):
                continue
            if kind in FALLBACKS and kind not in always and data.shape[1] % 256 == 0:
                continue
            kl = estimate(name, data)
            nbytes = tensor_bytes(kind, names[name])
            options[name].append(Option(kind, use, nbytes, kl))
            if kind in NO_IMATRIX and imatrix:
                options[name].append(Option(kind, True, nbytes, kl))  # the matrix changes nothing here
    return Probe(options, files, method, int(rows.numel()), names)


def _measurer(model, rows, tmap: TensorMap):
    meter = KLMeter(model, rows)

    @torch.no_grad()
    def estimate(name: str, data: np.ndarray) -> float:
        param = tmap.params[name]
        original = param.data  # swapped, not copied: the quantized values keep their fp32 precision
        param.data = tmap.to_model(name, data)
        try:
            return max(meter(), 0.0)
        finally:
            param.data = original

    return estimate


def _fisher_estimator(model, rows, tmap: TensorMap):
    fisher = fisher_diagonal(model, rows)

    def estimate(name: str, data: np.ndarray) -> float:
        param = tmap.params[name]
        delta = tmap.to_model(name, data).float() - param.detach().float()
        return float(0.5 * (fisher[id(param)] * delta * delta).sum())

    return estimate


@torch.no_grad()
def measure_mix(model, rows: torch.Tensor, base: Path, probe_: Probe, choice: dict[str, tuple[str, bool]]) -> float:
    """Measured mean KL (nats/token) with every tensor quantized as ``choice`` says, all at once."""
    import gguf

    tmap = TensorMap(model, gguf.GGUFReader(base))
    meter = KLMeter(model, measure_rows(rows))
    originals = {name: p.data for name, p in tmap.params.items()}  # swapped back after, never copied
    wanted: dict[Path, dict[str, str]] = {}
    for name, (kind, use) in choice.items():
        path = _file_holding(probe_, name, kind, use)
        wanted.setdefault(path, {})[name] = kind
    try:
        for path, tensors in wanted.items():
            for name, kind, data in dequantized(gguf.GGUFReader(path)):
                if tensors.get(name) == kind:
                    tmap.params[name].data = tmap.to_model(name, data)
        return max(meter(), 0.0)
    finally:
        for name, value in originals.items():
            tmap.params[name].data = value


def _file_holding(probe_: Probe, name: str, kind: str, use: bool) -> Path:
    """The candidate file in which tensor ``name`` was written as ``kind`` (directly or as a fallback)."""
    import gguf

    if (kind, use) in probe_.files:
        return probe_.files[kind, use]
    for (_, file_use), path in probe_.files.items():
        if file_use != use and kind not in NO_IMATRIX:
            continue
        for t in gguf.GGUFReader(path).tensors:
            if t.name == name and gguf.GGMLQuantizationType(t.tensor_type).name == kind:
                return path
    raise KeyError(f"no candidate file holds {name} as {kind}")
