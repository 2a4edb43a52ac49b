"""Statistics for comparing the rates of experiment variants.

- :func:`wilson_interval`: the Wilson score interval of one proportion (Wilson 1927),
  which stays inside [0, 1] and behaves at 0 and n successes, unlike the normal one.
- :func:`difference_interval`: the hybrid score interval of the difference of two
  independent proportions, ``p2 - p1``, built from their two Wilson intervals: method 10
  of R. G. Newcombe, "Interval estimation for the difference between independent
  proportions: comparison of eleven methods", Statistics in Medicine 17 (1998) 873-890.
  It is the interval for one look at the data, at a horizon fixed in advance.
- :func:`sequential_test`: an always-valid test of ``p2 - p1 = 0`` that may be looked at
  after every batch of data (every day) without inflating its error rate: the mixture
  sequential probability ratio test (mSPRT) of R. Johari, P. Koomen, L. Pekelis and
  D. Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests", Operations
  Research 70(3) (2022) 1806-1821 (the method behind Optimizely's stats engine), in its
  normal approximation for two proportions.

Why the sequential test: a fixed-horizon test (a z-test, or whether the Newcombe interval
excludes 0) is valid for one look. Checking it every day and stopping at the first
"significant" day rejects a true null far more often than its nominal 5% (about 20-30%
over 30 daily looks; tests/test_feedback_stats.py measures it). The mSPRT's p-value and
confidence sequence hold at any, data-dependent, stopping time.

mSPRT, as computed here at each checkpoint (cumulative successes and trials of both
arms): with ``θ̂ = p̂2 - p̂1`` and ``V = p̂1(1-p̂1)/n1 + p̂2(1-p̂2)/n2``, the likelihood ratio
of "difference θ" against "difference 0", mixed over ``θ ~ N(0, τ²)``, is::

    Λ = sqrt(V / (V + τ²)) · exp(τ² θ̂² / (2 V (V + τ²)))

The always-valid p-value is ``p_n = min(1, min over checkpoints so far of 1/Λ)`` and the
always-valid confidence sequence is::

    θ̂ ± sqrt(V (V + τ²) / τ² · (2 log(1/α) + log((V + τ²) / V)))

intersected over the checkpoints so far (each is valid at every time, so their running
intersection is too, and it excludes 0 exactly when ``p_n <= α``). A checkpoint where an
arm has no trials carries no evidence and is skipped (``Λ = 0``, the interval [-1, 1]);
where every rate is 0 or 1 (plug-in ``V = 0``), ``V`` comes from the rates shrunk by half a
success and half a failure, so 0% against 100% counts as the evidence it is.

The mixing variance ``τ²``: the test is valid for any ``τ``; ``τ`` sets the size of
difference it detects fastest (the prior spread of true differences). The default
``τ = 0.01`` (:data:`DEFAULT_TAU`) is an absolute difference of one percentage point on a
rate: the lift a recommender change is expected to make on click-through rates of a few
percent (a 10-30% relative change of a 3-10% CTR). A larger ``τ`` finds large differences
sooner and small ones later; a smaller one the reverse. Conversion rates (around 1%) have
smaller absolute differences: pass a smaller ``tau`` for them when that matters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from shelfrank.core.errors import InvalidInputError

DEFAULT_TAU = 0.01
DEFAULT_ALPHA = 0.05

Verdict = Literal["ahead", "behind", "no difference yet"]
AHEAD: Verdict = "ahead"
BEHIND: Verdict = "behind"
NO_DIFFERENCE_YET: Verdict = "no difference yet"


def _count(value: object, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise InvalidInputError(f"{name}: must be an integer >= 0, got {value!r}")


def _check_counts(successes: object, n: object, what: str) -> tuple[int, int]:
    checked_successes = _count(successes, f"{what}successes")
    checked_n = _count(n, f"{what}n")
    if checked_successes > checked_n:
        raise InvalidInputError(f"{what}successes: {successes} is more than n = {n}")
    return checked_successes, checked_n


def _z(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise InvalidInputError(f"confidence: must be a number in (0, 1), got {confidence!r}")
    if not 0.0 < confidence < 1.0:
        raise InvalidInputError(f"confidence: must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion; ``(0.0, 1.0)`` when ``n`` is 0."""
    successes, n = _check_counts(successes, n, "")
    z = _z(confidence)
    if n == 0:
        return 0.0, 1.0
    return _wilson(successes, n, z)


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    low = 0.0 if successes == 0 else min(p, max(0.0, center - half))
    high = 1.0 if successes == n else max(p, min(1.0, center + half))
    return low, high


def difference_interval(
    s1: int, n1: int, s2: int, n2: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) for ``p2 - p1``, within [-1, 1].
    An arm without trials has the rate 0 and the Wilson interval [0, 1]."""
    s1, n1 = _check_counts(s1, n1, "s1/n1: ")
    s2, n2 = _check_counts(s2, n2, "s2/n2: ")
    z = _z(confidence)
    p1 = s1 / n1 if n1 else 0.0
    p2 = s2 / n2 if n2 else 0.0
    l1, u1 = _wilson(s1, n1, z) if n1 else (0.0, 1.0)
    l2, u2 = _wilson(s2, n2, z) if n2 else (0.0, 1.0)
    difference = p2 - p1
    low = difference - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = difference + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return max(-1.0, min(difference, low)), min(1.0, max(difference, high))


@dataclass(frozen=True)
class Checkpoint:
    """Cumulative successes and trials of arm 1 (the control) and arm 2 (the variant)
    at one look (the end of a day, say)."""

    s1: int
    n1: int
    s2: int
    n2: int

    def __post_init__(self) -> None:
        _check_counts(self.s1, self.n1, "s1/n1: ")
        _check_counts(self.s2, self.n2, "s2/n2: ")


@dataclass(frozen=True, kw_only=True)
class SequentialResult:
    """The mSPRT after the last checkpoint: the estimate ``p2 - p1``, the always-valid
    confidence sequence (running intersection), the running always-valid p-value after
    each checkpoint and the verdict for arm 2 against arm 1 at level ``alpha``."""

    difference: float
    confidence_sequence: tuple[float, float]
    p_value: float
    p_values: tuple[float, ...]
    verdict: Verdict
    alpha: float
    tau: float


def _moments(checkpoint: Checkpoint) -> tuple[float, float] | None:
    """(θ̂, V) of a checkpoint, or None when an arm has no trials. Where both arms' rates
    are 0 or 1 the plug-in variance is 0, though 0 against 1 is the strongest evidence
    there is: V then comes from the rates shrunk by half a success and half a failure,
    (s + 0.5) / (n + 1) (Agresti and Caffo 2000)."""
    n1, n2 = checkpoint.n1, checkpoint.n2
    if n1 == 0 or n2 == 0:
        return None
    p1 = checkpoint.s1 / n1
    p2 = checkpoint.s2 / n2
    variance = p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2
    if variance <= 0.0:
        q1 = (checkpoint.s1 + 0.5) / (n1 + 1)
        q2 = (checkpoint.s2 + 0.5) / (n2 + 1)
        variance = q1 * (1.0 - q1) / n1 + q2 * (1.0 - q2) / n2
    return p2 - p1, variance


def likelihood_ratio(checkpoint: Checkpoint, tau: float = DEFAULT_TAU) -> float:
    """The mixture likelihood ratio Λ of one checkpoint (0 when it carries no evidence;
    ``inf`` when it overflows)."""
    tau2 = _check_tau(tau) ** 2
    moments = _moments(checkpoint)
    if moments is None:
        return 0.0
    difference, variance = moments
    exponent = tau2 * difference * difference / (2.0 * variance * (variance + tau2))
    if exponent > 700.0:
        return math.inf
    return math.sqrt(variance / (variance + tau2)) * math.exp(exponent)


def confidence_sequence(
    checkpoint: Checkpoint, alpha: float = DEFAULT_ALPHA, tau: float = DEFAULT_TAU
) -> tuple[float, float]:
    """The always-valid confidence interval of ``p2 - p1`` at one checkpoint (not yet
    intersected with the earlier ones), within [-1, 1]."""
    tau2 = _check_tau(tau) ** 2
    _check_alpha(alpha)
    moments = _moments(checkpoint)
    if moments is None:
        return -1.0, 1.0
    difference, variance = moments
    half = math.sqrt(
        variance
        * (variance + tau2)
        / tau2
        * (2.0 * math.log(1.0 / alpha) + math.log((variance + tau2) / variance))
    )
    return max(-1.0, difference - half), min(1.0, difference + half)


def sequential_test(
    checkpoints: Iterable[Checkpoint | tuple[int, int, int, int]],
    *,
    alpha: float = DEFAULT_ALPHA,
    tau: float = DEFAULT_TAU,
) -> SequentialResult:
    """The mSPRT over cumulative checkpoints (trials never decrease from one to the next):
    "ahead" when the confidence sequence lies above 0 (arm 2's rate is higher), "behind"
    when below, else "no difference yet". The estimate is that of the last checkpoint
    (0 without any)."""
    _check_tau(tau)
    _check_alpha(alpha)
    p_value = 1.0
    p_values: list[float] = []
    low, high = -1.0, 1.0
    difference = 0.0
    previous: Checkpoint | None = None
    for raw in checkpoints:
        checkpoint = raw if isinstance(raw, Checkpoint) else Checkpoint(*raw)
        if previous is not None and (checkpoint.n1 < previous.n1 or checkpoint.n2 < previous.n2):
            raise InvalidInputError(
                f"checkpoints: must be cumulative, trials went from {previous.n1}/{previous.n2} "
                f"to {checkpoint.n1}/{checkpoint.n2}"
            )
        previous = checkpoint
        moments = _moments(checkpoint)
        if checkpoint.n1 and checkpoint.n2:
            difference = checkpoint.s2 / checkpoint.n2 - checkpoint.s1 / checkpoint.n1
        if moments is not None:
            ratio = likelihood_ratio(checkpoint, tau)
            if ratio > 0.0:
                p_value = min(p_value, 1.0 / ratio)
            new_low, new_high = confidence_sequence(checkpoint, alpha, tau)
            # Intersect; should the data contradict themselves (drifting rates), keep the
            # intervals met so far rather than an empty one.
            if max(low, new_low) <= min(high, new_high):
                low, high = max(low, new_low), min(high, new_high)
        p_values.append(p_value)
    verdict: Verdict = NO_DIFFERENCE_YET
    if p_value <= alpha:
        if low > 0.0:
            verdict = AHEAD
        elif high < 0.0:
            verdict = BEHIND
    return SequentialResult(
        difference=difference,
        confidence_sequence=(low, high),
        p_value=p_value,
        p_values=tuple(p_values),
        verdict=verdict,
        alpha=alpha,
        tau=tau,
    )


def _check_tau(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not 0.0 < tau < math.inf:
        raise InvalidInputError(f"tau: must be a number > 0, got {tau!r}")
    return float(tau)


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < alpha < 1.0:
        raise InvalidInputError(f"alpha: must be a number in (0, 1), got {alpha!r}")
    return float(alpha)


__all__ = [
    "AHEAD",
    "BEHIND",
    "DEFAULT_ALPHA",
    "DEFAULT_TAU",
    "NO_DIFFERENCE_YET",
    "Checkpoint",
    "SequentialResult",
    "Verdict",
    "confidence_sequence",
    "difference_interval",
    "likelihood_ratio",
    "sequential_test",
    "wilson_interval",
]
