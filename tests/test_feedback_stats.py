"""Intervals and the always-valid sequential test of the feedback report."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shelfrank.core.errors import InvalidInputError
from shelfrank.server.feedback.stats import (
    DEFAULT_TAU,
    Checkpoint,
    confidence_sequence,
    difference_interval,
    likelihood_ratio,
    sequential_test,
    wilson_interval,
)


@st.composite
def proportions(draw: st.DrawFn, max_n: int = 10_000) -> tuple[int, int]:
    n = draw(st.integers(0, max_n))
    return draw(st.integers(0, n)), n


# ---------------------------------------------------------------- Wilson


def test_wilson_known_values() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775328))
    assert wilson_interval(5, 10) == pytest.approx((0.2365931, 0.7634069))
    assert wilson_interval(10, 10) == pytest.approx((0.7224672, 1.0))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(5, 10, confidence=0.99)
    assert low < 0.2365931
    assert high > 0.7634069


@given(proportions(), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_contains_estimate(counts: tuple[int, int], confidence: float) -> None:
    successes, n = counts
    low, high = wilson_interval(successes, n, confidence)
    estimate = successes / n if n else 0.0
    assert 0.0 <= low <= estimate <= high <= 1.0


@given(proportions(max_n=2_000))
def test_wilson_narrows_with_n(counts: tuple[int, int]) -> None:
    successes, n = counts
    low, high = wilson_interval(successes, n)
    low4, high4 = wilson_interval(4 * successes, 4 * n)
    if n == 0:
        assert (low4, high4) == (low, high) == (0.0, 1.0)
    else:
        assert high4 - low4 < high - low


@pytest.mark.parametrize(
    ("successes", "n", "confidence", "field"),
    [
        (-1, 5, 0.95, "successes"),
        (6, 5, 0.95, "successes"),
        (1, 5.0, 0.95, "n"),
        (True, 5, 0.95, "successes"),
        (1, 5, 1.0, "confidence"),
        (1, 5, 0.0, "confidence"),
    ],
)
def test_wilson_refuses(successes: int, n: int, confidence: float, field: str) -> None:
    with pytest.raises(InvalidInputError, match=field):
        wilson_interval(successes, n, confidence)


# ---------------------------------------------------------------- Newcombe


@pytest.mark.parametrize(
    ("s1", "n1", "s2", "n2", "expected"),
    [
        # Newcombe (1998), Table II, method 10; there as p1 - p2, here arm 2 - arm 1
        (48, 80, 56, 70, (0.0524, 0.3339)),
        (3, 10, 9, 10, (0.1705, 0.8090)),
        (0, 29, 5, 56, (-0.0381, 0.1926)),
    ],
)
def test_newcombe_published_values(
    s1: int, n1: int, s2: int, n2: int, expected: tuple[float, float]
) -> None:
    assert difference_interval(s1, n1, s2, n2) == pytest.approx(expected, abs=1e-4)


@given(proportions(), proportions())
def test_newcombe_contains_estimate(first: tuple[int, int], second: tuple[int, int]) -> None:
    (s1, n1), (s2, n2) = first, second
    low, high = difference_interval(s1, n1, s2, n2)
    estimate = (s2 / n2 if n2 else 0.0) - (s1 / n1 if n1 else 0.0)
    assert -1.0 <= low <= estimate <= high <= 1.0


@given(proportions(max_n=2_000), proportions(max_n=2_000))
def test_newcombe_narrows_with_n(first: tuple[int, int], second: tuple[int, int]) -> None:
    (s1, n1), (s2, n2) = first, second
    low, high = difference_interval(s1, n1, s2, n2)
    low4, high4 = difference_interval(4 * s1, 4 * n1, 4 * s2, 4 * n2)
    assert high4 - low4 <= high - low
    if n1 and n2 and high - low < 2.0:
        assert high4 - low4 < high - low


def test_newcombe_is_antisymmetric() -> None:
    low, high = difference_interval(30, 100, 45, 110)
    assert difference_interval(45, 110, 30, 100) == pytest.approx((-high, -low))


# ---------------------------------------------------------------- mSPRT


def test_likelihood_ratio_formula() -> None:
    checkpoint = Checkpoint(50, 1000, 80, 1000)
    p1, p2 = 0.05, 0.08
    v = p1 * (1 - p1) / 1000 + p2 * (1 - p2) / 1000
    t2 = DEFAULT_TAU**2
    expected = math.sqrt(v / (v + t2)) * math.exp(t2 * (p2 - p1) ** 2 / (2 * v * (v + t2)))
    assert likelihood_ratio(checkpoint) == pytest.approx(expected)
    half = math.sqrt(v * (v + t2) / t2 * (2 * math.log(20) + math.log((v + t2) / v)))
    assert confidence_sequence(checkpoint) == pytest.approx((0.03 - half, 0.03 + half))
    result = sequential_test([checkpoint])
    assert result.p_value == pytest.approx(min(1.0, 1 / expected))
    assert result.difference == pytest.approx(0.03)


def test_no_evidence_checkpoints() -> None:
    result = sequential_test([(0, 0, 0, 0), (0, 10, 0, 10), (0, 10, 0, 12)])
    assert result.p_value == 1.0
    assert result.confidence_sequence == (-1.0, 1.0)
    assert result.verdict == "no difference yet"
    assert likelihood_ratio(Checkpoint(0, 10, 0, 0)) == 0.0
    empty = sequential_test([])
    assert (empty.p_value, empty.p_values, empty.difference) == (1.0, (), 0.0)


def test_rates_of_zero_and_one_count_as_evidence() -> None:
    # The plug-in variance of 0% against 100% is 0; skipping such a checkpoint left the
    # most lopsided result "no difference yet" at p = 1.
    lopsided = sequential_test([(0, 500, 500, 500)])
    assert lopsided.verdict == "ahead"
    assert lopsided.p_value <= 0.05
    assert lopsided.confidence_sequence[0] > 0.9
    assert sequential_test([(500, 500, 0, 500)]).verdict == "behind"
    # Both arms at 0 (or both at 1): evidence of no difference, never of one.
    for same in ((0, 500, 0, 500), (500, 500, 500, 500)):
        level = sequential_test([same])
        assert (level.verdict, level.p_value, level.difference) == ("no difference yet", 1.0, 0.0)


def test_verdicts() -> None:
    days = range(1, 15)
    ahead = sequential_test([(50 * d, 1000 * d, 80 * d, 1000 * d) for d in days])
    behind = sequential_test([(80 * d, 1000 * d, 50 * d, 1000 * d) for d in days])
    level = sequential_test([(50 * d, 1000 * d, 51 * d, 1000 * d) for d in days])
    assert ahead.verdict == "ahead"
    assert ahead.confidence_sequence[0] > 0
    assert behind.verdict == "behind"
    assert behind.confidence_sequence[1] < 0
    assert level.verdict == "no difference yet"
    assert ahead.p_value <= 0.05 < level.p_value


@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 60), st.integers(0, 60)),
        max_size=12,
    )
)
def test_sequential_properties(batches: list[tuple[int, int, int, int]]) -> None:
    s1 = n1 = s2 = n2 = 0
    checkpoints = []
    for a, b, c, d in batches:
        n1 += max(a, b)
        s1 += min(a, b)
        n2 += max(c, d)
        s2 += min(c, d)
        checkpoints.append(Checkpoint(s1, n1, s2, n2))
    result = sequential_test(checkpoints)
    low, high = result.confidence_sequence
    assert -1.0 <= low <= high <= 1.0
    assert len(result.p_values) == len(checkpoints)
    assert all(0.0 <= p <= 1.0 for p in result.p_values)
    assert all(b <= a for a, b in zip(result.p_values, result.p_values[1:], strict=False))
    assert result.p_value == (result.p_values[-1] if checkpoints else 1.0)
    if result.verdict == "ahead":
        assert low > 0.0
    elif result.verdict == "behind":
        assert high < 0.0
    # every single checkpoint's interval is at least as wide as the running intersection
    for checkpoint in checkpoints:
        one_low, one_high = confidence_sequence(checkpoint)
        assert one_high - one_low >= high - low - 1e-12 or (one_low, one_high) == (-1.0, 1.0)


def test_sequential_refuses() -> None:
    with pytest.raises(InvalidInputError, match="cumulative"):
        sequential_test([(5, 100, 5, 100), (5, 90, 6, 110)])
    with pytest.raises(InvalidInputError, match="s2/n2: successes"):
        sequential_test([(5, 100, 11, 10)])
    with pytest.raises(InvalidInputError, match="tau"):
        sequential_test([], tau=0.0)
    with pytest.raises(InvalidInputError, match="alpha"):
        sequential_test([], alpha=1.0)


def _null_rejections(
    rate: float, daily: int, runs: int = 400, days: int = 30, seed: int = 2026
) -> tuple[float, float]:
    """Share of A/A runs (both arms ``rate``) declared different at some daily look: by
    the always-valid test, and by a naive two-sided z-test at 5% repeated every day."""
    rng = np.random.default_rng(seed)
    s1 = rng.binomial(daily, rate, size=(runs, days)).cumsum(axis=1)
    s2 = rng.binomial(daily, rate, size=(runs, days)).cumsum(axis=1)
    n = daily * np.arange(1, days + 1)
    pooled = (s1 + s2) / (2 * n)
    se = np.sqrt(pooled * (1 - pooled) * 2 / n)
    z = np.divide((s2 - s1) / n, se, out=np.zeros_like(se), where=se > 0)
    naive = float(np.mean(np.any(np.abs(z) > 1.959964, axis=1)))
    always_valid = float(
        np.mean(
            [
                sequential_test(
                    [
                        Checkpoint(int(a), int(m), int(b), int(m))
                        for a, b, m in zip(x, y, n, strict=True)
                    ]
                ).p_value
                <= 0.05
                for x, y in zip(s1, s2, strict=True)
            ]
        )
    )
    return always_valid, naive


@pytest.mark.parametrize(("rate", "daily"), [(0.05, 1000), (0.2, 200)])
def test_always_valid_under_continuous_monitoring(rate: float, daily: int) -> None:
    """Looking every day for 30 days: the mSPRT keeps its 5% (with a sampling tolerance
    of about two standard errors of 400 runs), the naive daily z-test does not."""
    always_valid, naive = _null_rejections(rate, daily)
    assert always_valid <= 0.05 + 0.025
    assert naive > 0.15
    assert naive > always_valid + 0.1


def test_power_against_a_real_difference() -> None:
    rng = np.random.default_rng(7)
    n = 1000 * np.arange(1, 31)
    found = 0
    for _ in range(100):
        s1 = rng.binomial(1000, 0.05, 30).cumsum()
        s2 = rng.binomial(1000, 0.065, 30).cumsum()
        checkpoints = [
            Checkpoint(int(a), int(m), int(b), int(m)) for a, b, m in zip(s1, s2, n, strict=True)
        ]
        found += sequential_test(checkpoints).verdict == "ahead"
    assert found >= 80
