"""The bad-input matrix (``benchmarks/robustness_cases.py``, reached through pytest's
``pythonpath`` setting), one test per case.

Every bad action must end in its expected clear :class:`~meteora.errors.MeteoraError`
(with the message naming what and where), and every ok action in a checked correct
result: never a raw traceback, a silently wrong result, or a changed user file.
``benchmarks/robustness.py`` writes the same matrix as a table.
"""

from __future__ import annotations

import pytest
from robustness_cases import Env, build_cases, run_case

CASES = build_cases()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("robustness"))


def test_matrix_is_large_and_covers_every_group():
    groups = {c.group for c in CASES}
    assert len(CASES) >= 300
    assert {"passage", "query", "embeddings", "generator", "corpus", "cli", "index/cache"} <= groups


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, env):
    outcome = run_case(case, env)
    assert outcome.passed, (
        f"{case.id}: expected {case.expected}, got {outcome.actual} "
        f"({outcome.error_type}): {outcome.message}"
    )
