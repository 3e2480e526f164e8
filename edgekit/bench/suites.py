"""Benchmark suites: TOML files in bench/suites/, validated (unknown keys are errors)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekit.errors import ConfigError, InputError, Problem
from edgekit.fileio import package_data_dir

if TYPE_CHECKING:
    from edgekit.targets import TargetProfile

TARGET_SUITE = "target"  # the suite a target profile's [bench] section describes

PositiveInt = Annotated[int, Field(gt=0)]


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    prompt_lengths: Annotated[list[PositiveInt], Field(min_length=1)]
    new_tokens: PositiveInt
    repeats: PositiveInt
    warmup: Annotated[int, Field(ge=0)] = 1
    rounds: PositiveInt = 1  # fresh child processes per artifact, interleaved across artifacts
    quality_tokens: Annotated[int, Field(ge=0)] = 1024  # held-out tokens for ppl / KL / top-1 (0: skip)
    export_ladder: bool = False  # export the target's ladder first (quant-sweep)


def suites_dir() -> Path:
    """Where shipped suites live: package data (the repository's ``bench/suites`` links here)."""
    return package_data_dir("bench", "suites")


def list_suites() -> list[str]:
    return sorted(p.stem for p in suites_dir().glob("*.toml"))


def target_suite(target: TargetProfile) -> Suite:
    """The device's own measurement settings (its profile's ``[bench]``), one process per artifact."""
    b = target.bench
    return Suite(
        name=f"{TARGET_SUITE}:{target.name}",
        description=f"the [bench] settings of the {target.name} profile",
        prompt_lengths=b.prompt_lengths,
        new_tokens=b.new_tokens,
        repeats=b.repeats,
        warmup=b.warmup,
    )


def load_suite(name_or_path: str | Path, target: TargetProfile | None = None) -> Suite:
    """A suite by name ("quick") or path; every problem reported at once with file and key.

    The name ``target`` takes the settings from ``target``'s profile (its ``[bench]`` section).
    """
    if str(name_or_path) == TARGET_SUITE:
        if target is None:
            raise InputError(
                f"--suite {TARGET_SUITE}", "this suite takes its settings from a target profile: give --target"
            )
        return target_suite(target)
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = suites_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        shipped = ", ".join([*list_suites(), TARGET_SUITE])
        raise InputError(name_or_path, f"no such suite; shipped suites: {shipped}")
    try:
        return Suite.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(str(path), "", f"not valid TOML ({exc})")]) from None
    except ValidationError as exc:
        raise ConfigError(
            [
                Problem(
                    str(path),
                    ".".join(map(str, e["loc"])),
                    "unknown key" if e["type"] == "extra_forbidden" else e["msg"],
                )
                for e in exc.errors()
            ]
        ) from None
