"""The Hugging Face loading flags reach every load of the model the user named, and only that model."""

from __future__ import annotations

import shutil

import pytest
import torch

from edgekit.errors import ConfigError
from edgekit.loading import LoadOptions, options_for, using
from edgekit.models import load_model


def test_dtype_applies_to_the_named_model_only(tiny_llama_dir, tmp_path):
    other = shutil.copytree(tiny_llama_dir, tmp_path / "student")
    with using([str(tiny_llama_dir)], LoadOptions(dtype="bfloat16")):
        assert next(load_model(tiny_llama_dir).parameters()).dtype == torch.bfloat16
        assert next(load_model(other).parameters()).dtype == torch.float32  # derived models stay fp32
    assert next(load_model(tiny_llama_dir).parameters()).dtype == torch.float32  # only inside the block


def test_relative_and_absolute_spellings_are_one_model(tiny_llama_dir, monkeypatch):
    monkeypatch.chdir(tiny_llama_dir.parent)
    opts = LoadOptions(revision="v1", trust_remote_code=True)
    with using([f"./{tiny_llama_dir.name}"], opts):
        assert options_for(tiny_llama_dir) == opts
        assert options_for("someone/else") == LoadOptions()
    assert opts.hub_kwargs() == {"revision": "v1"}


def test_an_unknown_dtype_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="--dtype"):
        LoadOptions(dtype="float8")
