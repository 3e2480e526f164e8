"""Every hostile case, run as a user would (a fresh process each): a clean one-line error, or the right success.

A case fails when edgekit answers it with a traceback, a signal, a hang, exit 0 where an error was
due, a changed file under a final name, a temporary left behind, or an error line that does not
name the problem. ``python -m tests.hostile.runner`` prints the same outcomes as counts per class.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.cases import CASES
from tests.hostile.fixtures import build
from tests.hostile.runner import run_case

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def hostile_fixtures(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("hostile-fixtures"))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_hostile_case_is_handled_cleanly(case, hostile_fixtures, tmp_path):
    outcome = run_case(case, hostile_fixtures, tmp_path / "case", str(ROOT))
    assert outcome.kind == "clean", f"{case}: {outcome.kind} ({outcome.detail})\n{outcome.stderr[-1500:]}"
    if case.expect == "error":
        assert outcome.returncode not in (0, None)
        errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
        assert errors and all(len(line) < 400 for line in errors)
