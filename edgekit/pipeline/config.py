"""The build configuration: what ``edgekit build`` does at each stage.

Defaults suit the built-in demo teacher on a 2-core CPU; a TOML file (``--config build.toml``)
overrides them section by section, and ``--set section.key=value`` flags override both. Unknown keys
are errors and every problem is reported at once.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekit.errors import ConfigError, InputError, Problem
from edgekit.fileio import read_toml
from edgekit.formats import level_problems

Ratio = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]


class _Strict(BaseModel):
    # strict: `steps = true` or `trust_remote_code = "yes"` are mistakes, not 1 and True;
    # allow_inf_nan off: `lr = inf` or `nan` would train to garbage without an error
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class TeacherSection(_Strict):
    model: str = "demo"  # "demo", a local HF folder, or a Hugging Face Hub id
    trust_remote_code: bool = False


class DataSection(_Strict):
    train: str = "builtin"  # "builtin" (stdlib docs) or a .txt / .jsonl file or folder
    seq_len: PositiveInt = 256  # tokens per training row
    max_train_sequences: PositiveInt | None = None
    heldout_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05
    heldout_sequences: PositiveInt = 16


class DistillSection(_Strict):
    enabled: bool = True
    student_layers: PositiveInt | None = 3  # None keeps the teacher's depth
    student_hidden: PositiveInt | None = None  # None keeps the teacher's width
    init: Literal["teacher", "random"] = "teacher"
    steps: PositiveInt = 160
    batch_size: PositiveInt = 8
    lr: Annotated[float, Field(gt=0)] = 3e-4  # students start from teacher weights: keep steps small
    temperature: Annotated[float, Field(gt=0)] = 2.0
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1  # weight of hard-label CE; the rest is T²·KL
    via: str | None = None  # progressive: intermediate sizes, fractions of the teacher's layers ("0.5" or "0.5x0.75")

    @field_validator("via")
    @classmethod
    def _stages(cls, value: str | None) -> str | None:
        from edgekit.distill.progressive import parse_via

        if value is not None:
            try:
                parse_via(value, "distill.via")
            except ConfigError as exc:
                raise ValueError("; ".join(p.message for p in exc.problems)) from None
        return value

    @model_validator(mode="after")
    def _via_keeps_width(self):
        if self.via and self.student_hidden:
            raise ValueError("via (progressive stages) derives students by layers and FFN width; drop student_hidden")
        return self


class PruneSection(_Strict):
    enabled: bool = True
    ffn: Ratio = 0.33  # fraction of FFN channels removed
    heads: Ratio = 0.0  # fraction of attention heads removed (whole KV groups kept consistent)
    layers: Annotated[int, Field(ge=0)] = 0  # whole decoder layers removed
    hidden: Ratio = 0.0  # fraction of hidden width removed
    criterion: Literal["activation", "magnitude", "taylor", "block", "loo"] = "activation"
    round_to: PositiveInt | None = None  # None: 256 when the target uses K-quants, else 1
    calibration_sequences: PositiveInt = 16


class RecoverSection(_Strict):
    enabled: bool = True
    steps: PositiveInt = 120
    lr: Annotated[float, Field(gt=0)] = 3e-4


class ExportSection(_Strict):
    formats: list[Literal["gguf", "onnx"]] | None = None  # None: the target's formats
    gguf_levels: list[str] | None = None  # None: the target's ladder
    onnx_levels: list[str] | None = None
    imatrix: bool | None = None  # None: the target's setting
    calibration_sequences: PositiveInt = 16
    # GGUF tensor types chosen per tensor from measured sensitivity within each level's size
    # (edgekit.export.mix), probed on the build's own training text; "none": llama.cpp's mixes
    allocate: Literal["auto", "measure", "fisher", "none"] = "auto"

    @field_validator("gguf_levels", "onnx_levels")
    @classmethod
    def _known_levels(cls, value: list[str] | None, info) -> list[str] | None:
        fmt = "gguf" if info.field_name == "gguf_levels" else "onnx"
        if value is not None and not value:
            raise ValueError(f"empty list of {fmt} levels; leave it out to use the target's ladder")
        problems = level_problems(fmt, value or [], "", "")
        if problems:
            raise ValueError(problems[0].message)
        return value


class VerifySection(_Strict):
    max_tokens: PositiveInt = 1024
    fail_on_error: bool = True  # refuse to bundle artifacts that fail their gate


class BenchSection(_Strict):
    enabled: bool = True
    suite: str = "quick"

    @field_validator("suite")
    @classmethod
    def _known_suite(cls, value: str) -> str:
        """A shipped suite name, ``target``, or a suite TOML file that exists (found now, not after training)."""
        from edgekit.bench.suites import TARGET_SUITE, list_suites

        known = [*list_suites(), TARGET_SUITE]
        if value in known or (value.endswith(".toml") and Path(value).is_file()):
            return value
        raise ValueError(f"unknown bench suite {value!r}; choose from {', '.join(known)} or a suite .toml file")


class BuildConfig(_Strict):
    teacher: TeacherSection = TeacherSection()
    data: DataSection = DataSection()
    distill: DistillSection = DistillSection()
    prune: PruneSection = PruneSection()
    recover: RecoverSection = RecoverSection()
    export: ExportSection = ExportSection()
    verify: VerifySection = VerifySection()
    bench: BenchSection = BenchSection()
    seed: int = 0


def parse_build_config(data: dict, source: str, overridden: frozenset[str] = frozenset()) -> BuildConfig:
    """Validate build-config data, raising one ConfigError with every problem (file + dotted key).

    Problems in keys named in ``overridden`` are attributed to ``--set`` rather than the file.
    """
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            default = err["msg"].removeprefix("Value error, ")
            msg = {"extra_forbidden": "unknown key", "missing": "required key is missing"}.get(err["type"], default)
            origin = OVERRIDE_SOURCE if any(_related(key, k) for k in overridden) else source
            problems.append(Problem(origin, key, msg))
        raise ConfigError(problems) from None


OVERRIDE_SOURCE = "--set"


def _related(key: str, overridden: str) -> bool:
    """Whether a problem at dotted ``key`` comes from ``--set overridden`` (same key, inside it, or its section).

    ``--set zzz.x=1`` makes an unknown section ``zzz``: the problem's key is the section, above the setting.
    """
    return key == overridden or key.startswith(f"{overridden}.") or overridden.startswith(f"{key}.")


def apply_overrides(data: dict, overrides: Sequence[str]) -> tuple[dict, frozenset[str]]:
    """Merge ``section.key=value`` settings into config data; values are TOML (``3``, ``["Q8_0"]``).

    A value that is not valid TOML is taken as a string, so ``teacher.model=./my-model`` works
    unquoted. Returns the merged data and the dotted keys that were set.
    """
    merged = copy.deepcopy(data)
    problems, keys = [], set()
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(Problem(OVERRIDE_SOURCE, item, "expected SECTION.KEY=VALUE, e.g. distill.steps=80"))
            continue
        *sections, leaf = key.split(".")
        node = merged
        for part in sections:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(Problem(OVERRIDE_SOURCE, key, f"{part} is a value, not a section"))
                break
            node = child
        else:
            node[leaf] = _toml_value(raw.strip())
            keys.add(key)
    if problems:
        raise ConfigError(problems)
    return merged, frozenset(keys)


def _toml_value(raw: str):
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    except RecursionError:
        raise ConfigError([Problem(OVERRIDE_SOURCE, raw[:40], "value nested too deeply")]) from None


def load_build_config(path: str | Path | None, overrides: Sequence[str] = ()) -> BuildConfig:
    """The build config from a TOML file (or the defaults when ``path`` is None), then ``overrides``."""
    data, source = {}, "defaults"
    if path is not None:
        path, source = Path(path), str(path)
        if not path.is_file():
            raise InputError(path, "build config file not found")
        data = read_toml(path, "build config")
    data, overridden = apply_overrides(data, overrides)
    return parse_build_config(data, source, overridden)
