"""Bootstrap intervals against known distributions: they cover a known median shift, flag a
zero effect as within noise, and are reproducible (seeded)."""

import math
import random
import time

from ng911.observe.stats import Interval, bootstrap_diff, replicates

SHIFT = 0.8  # ms added to every value of the second sample: the true difference of medians


def _lognormal(seed: int, n: int, shift: float = 0.0) -> list[float]:
    r = random.Random(seed)
    return [r.lognormvariate(math.log(5.0), 0.6) + shift for _ in range(n)]


def test_interval_covers_a_known_median_shift():
    covered = 0
    for trial in range(20):
        base = _lognormal(2 * trial, 300)
        moved = _lognormal(2 * trial + 1, 300, SHIFT)
        d = bootstrap_diff(
            replicates(moved, key=f"m{trial}", resamples=1000),
            replicates(base, key=f"b{trial}", resamples=1000),
        )
        med = d["median"]
        covered += med.lo <= SHIFT <= med.hi
        assert med.lo < med.ms < med.hi
    assert covered >= 17  # 95% nominal; 20 seeded trials


def test_a_clear_effect_is_not_noise_and_no_effect_is():
    base = _lognormal(1, 400)
    moved = _lognormal(2, 400, 3.0)
    same = _lognormal(3, 400)
    rb = replicates(base, key="b")
    clear = bootstrap_diff(replicates(moved, key="m"), rb)
    assert not clear["median"].within_noise and not clear["mean"].within_noise
    assert clear["median"].lo > 0
    none = bootstrap_diff(replicates(same, key="s"), rb)
    assert none["median"].within_noise and none["mean"].within_noise
    assert Interval(0.1, -0.2, 0.4).to_dict()["within_noise"] is True


def test_seeded_reproducible_and_bounded():
    xs = _lognormal(5, 500)
    a, b = replicates(xs, key="k"), replicates(xs, key="k")
    assert a == b
    assert replicates(xs, key="other") != a
    assert replicates([], key="k") is None
    t = time.perf_counter()
    r = replicates(xs, key="speed")
    assert r is not None and len(r.medians) == 2000
    assert time.perf_counter() - t < 30  # ~0.15 s here; generous for a loaded machine
