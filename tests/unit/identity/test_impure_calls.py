"""Functions that read the clock or an unseeded global random generator are said to be impure,
once, at their first call (identity/impure.py)."""

from __future__ import annotations

import datetime
import random
import time
import warnings
from datetime import datetime as DateTime
from random import randint

import numpy as np
import pytest

from pythagoras_p2p.identity.impure import ImpureCallWarning, impure_constructs


def stamped(*, x):
    return [x, time.time()]


def clocks_and_dice(*, x):
    a = DateTime.now(), datetime.date.today(), time.time_ns()
    b = [random.random() + randint(1, 2) for _ in range(x)]  # inside a comprehension too
    return a, b, np.random.rand(2)


def seeded(*, x):
    random.seed(x)
    np.random.seed(x)
    return random.random() + float(np.random.rand())


def honest(*, x):
    t0 = time.perf_counter()  # a duration: not the result's business
    rng, r = np.random.default_rng(x), random.Random(x)
    return rng.random() + r.random() + datetime.datetime(2020, 1, 1).year + (time.perf_counter() - t0) * 0


def test_each_clock_and_global_generator_is_named():
    assert sorted(impure_constructs(clocks_and_dice)) == sorted([
        "DateTime.now()", "datetime.date.today()", "time.time_ns()",
        "random.random() (the global random generator)",
        "randint() (the global random generator)",
        "np.random.rand() (the global random generator)"])
    assert impure_constructs(seeded) == [] and impure_constructs(honest) == []


def test_a_pure_function_that_reads_the_clock_is_warned_about_once(cloud):
    f = cloud.add_pure_function(stamped)
    with pytest.warns(ImpureCallWarning, match=r"stamped calls time\.time\(\)"):
        f(x=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(x=2)  # once per function
        cloud.add_pure_function(honest)(x=1)


def imports_its_clock(*, x):
    import time as clock
    from time import time as now
    return clock.time() + now() + x


def unseeded_generators(*, x):
    import uuid
    return np.random.default_rng().random(), random.Random().random(), uuid.uuid4(), x


def seeded_generators(*, x):
    return np.random.default_rng(x).random(), random.Random(x).random()


def test_clocks_imported_in_the_body_and_generators_made_without_a_seed_are_named():
    assert impure_constructs(imports_its_clock) == ["time.time()"]  # both, named once
    found = impure_constructs(unseeded_generators)
    assert any("default_rng()" in f for f in found) and any("Random()" in f for f in found)
    assert "uuid.uuid4()" in found
    assert impure_constructs(seeded_generators) == []
