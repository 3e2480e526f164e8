"""The edgekit error family.

Every failure a user can cause or meet is an ``EdgekitError``: the CLI prints its message as one
line per problem and exits non-zero, without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class EdgekitError(Exception):
    """Base of every error edgekit raises on purpose."""

    exit_code = 1

    def lines(self) -> list[str]:
        """The message as the CLI prints it: one line per problem."""
        return [str(self)]


@dataclass(frozen=True)
class Problem:
    """One configuration problem: where (file and dotted key) and what is wrong."""

    source: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.key}" if self.key else self.source
        return f"{where}: {self.message}"


class ConfigError(EdgekitError):
    """A configuration (target profile, build config, CLI options) is invalid.

    Carries *every* problem found, so the user fixes them in one pass.
    """

    exit_code = 2

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class InputError(EdgekitError):
    """A file or folder given by the user is missing, unreadable or malformed."""

    exit_code = 2

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnsupportedModelError(EdgekitError):
    """The model's architecture or tokenizer cannot be handled by a stage; the message says which are."""

    exit_code = 2


class StageError(EdgekitError):
    """A pipeline stage failed for a reason other than bad input."""

    def __init__(self, stage: str, problem: str):
        self.stage = stage
        super().__init__(f"stage {stage!r} failed: {problem}")


class VerificationError(EdgekitError):
    """An exported artifact disagrees with the PyTorch reference beyond its thresholds."""

    exit_code = 3

    def __init__(self, message: str, table: str = ""):
        self.table = table
        super().__init__(message)

    def lines(self) -> list[str]:
        return [str(self), *self.table.splitlines()] if self.table else [str(self)]


class BackendUnavailable(EdgekitError):
    """A runtime or exporter that the work needs is not installed; the message says how to get it."""

    exit_code = 4


class DoesNotFit(EdgekitError):
    """A model cannot fit the target's memory budget at any allowed level; the message gives numbers."""

    exit_code = 5


class NativeCrash(EdgekitError):
    """A native runtime (llama.cpp, ONNX Runtime) crashed or hung on a file; see ``edgekit.isolate``."""

    exit_code = 6

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ResourceError(EdgekitError):
    """The machine ran out of something the work needs (disk space, memory); the message says which and where."""

    exit_code = 7


class IntegrityError(EdgekitError):
    """A file's bytes differ from the sha256 recorded for it (tampered, truncated or replaced)."""

    exit_code = 3  # a verification failure, like an artifact that fails its quality gate

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        super().__init__(f"{path}: {problem}")
