"""The build's export stage applies the target profile's export settings to the files it writes."""

from __future__ import annotations

import gguf
import pytest

from edgekit.pipeline import stages
from edgekit.pipeline.config import DataSection


def _token_embd_type(path) -> str:
    return next(t.tensor_type.name for t in gguf.GGUFReader(path).tensors if t.name == "token_embd.weight")


@pytest.mark.integration
@pytest.mark.parametrize(("keep", "expected"), [(None, "Q4_K"), ("Q8_0", "Q8_0")])
def test_export_stage_keeps_embeddings_at_the_profiles_type_when_keep_output_tensor_is_set(
    tiny_llama_dir, tmp_path, keep, expected
):
    out_dir = tmp_path / str(keep)
    summary = stages.run_export(
        out_dir,
        tiny_llama_dir,
        DataSection(heldout_sequences=2),
        {"gguf": ["Q4_K_M"]},
        imatrix=False,
        calibration_sequences=2,
        progress=False,
        keep_output_tensor=keep,
    )
    (artifact,) = summary["artifacts"]
    assert _token_embd_type(out_dir / artifact["path"]) == expected
