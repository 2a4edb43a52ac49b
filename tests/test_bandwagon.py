"""Bandwagon shilling (issue 6): 1% fake users buying one unpopular item while viewing the
popular ones reach at most 1% of real users' top 10 with the default settings (the attack
cannot reach more real users than its own size). Runs ``benchmarks/bandwagon.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_benchmark


@pytest.mark.slow
def test_one_percent_fake_users_reach_at_most_one_percent_of_real_users(tmp_path: Path) -> None:
    result = run_benchmark("bandwagon.py", tmp_path / "result.json", timeout=600)
    assert result["fake_share"] == 0.01
    for target in result["targets"]:
        assert target["after"]["hit_rate_at_10"] <= 0.01, target
