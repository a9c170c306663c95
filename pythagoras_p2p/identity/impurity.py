"""Calls that make a function impure: reading the clock, drawing from a global random generator.

Found statically, from what the walk resolves anyway: the names a function's code loads and the
attributes it reads of them (``time.time()``, ``datetime.now()``, ``random.choice(...)``,
``np.random.rand(...)``, or the same functions imported by name). A seeded generator made in the
function (``random.Random(seed)``, ``np.random.default_rng(seed)``) reads none of them. The
caller is warned once per function (:class:`~pythagoras_p2p.errors.ImpurityWarning`); its results
are still memoized: the first value read is the one kept.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["impure_construct"]

_CLOCK = frozenset({
    "time", "time_ns", "perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns",
    "process_time", "process_time_ns", "thread_time", "thread_time_ns", "localtime", "ctime",
})
_NOW = frozenset({"now", "today", "utcnow"})
_RANDOM = frozenset({
    "random", "randint", "randrange", "randbytes", "getrandbits", "choice", "choices", "shuffle",
    "sample", "uniform", "triangular", "gauss", "normalvariate", "lognormvariate", "expovariate",
    "vonmisesvariate", "gammavariate", "betavariate", "paretovariate", "weibullvariate",
    "binomialvariate",
})
_NUMPY_LEGACY = frozenset({
    "rand", "randn", "randint", "random", "random_sample", "ranf", "sample", "random_integers",
    "choice", "shuffle", "permutation", "bytes", "uniform", "normal", "standard_normal",
    "binomial", "poisson", "exponential", "beta", "gamma", "multinomial", "multivariate_normal",
    "lognormal", "laplace", "logistic", "geometric", "chisquare", "dirichlet", "standard_t",
    "standard_cauchy", "standard_exponential", "standard_gamma", "triangular", "weibull",
    "pareto", "rayleigh", "vonmises", "wald", "zipf", "hypergeometric", "negative_binomial",
    "f", "gumbel", "logseries", "power", "noncentral_chisquare", "noncentral_f",
})


def _global_random() -> Any:
    module = sys.modules.get("random")
    return getattr(module, "_inst", None) if module is not None else None


def _numpy_global_state() -> Any:
    mtrand = sys.modules.get("numpy.random.mtrand")
    return getattr(mtrand, "_rand", None) if mtrand is not None else None


def impure_construct(obj: Any, attrs: tuple[str, ...]) -> str | None:
    """What is impure in reading ``attrs`` of ``obj`` (a value a name resolved to), if anything."""
    if isinstance(obj, types.ModuleType):
        name = obj.__dict__.get("__name__")
        if name == "time" and attrs[:1] and attrs[0] in _CLOCK:
            return f"time.{attrs[0]}()"
        if name == "datetime" and len(attrs) >= 2 and attrs[0] in ("datetime", "date") \
                and attrs[1] in _NOW:
            return f"datetime.{attrs[0]}.{attrs[1]}()"
        if name == "random" and attrs[:1] and attrs[0] in _RANDOM:
            return f"random.{attrs[0]}() (the unseeded global generator)"
        if name == "numpy" and len(attrs) >= 2 and attrs[0] == "random" and attrs[1] in _NUMPY_LEGACY:
            return f"numpy.random.{attrs[1]}() (the unseeded global generator)"
        if name == "numpy.random" and attrs[:1] and attrs[0] in _NUMPY_LEGACY:
            return f"numpy.random.{attrs[0]}() (the unseeded global generator)"
        return None
    if isinstance(obj, type):
        import datetime

        if issubclass(obj, (datetime.date, datetime.datetime)) and attrs[:1] and attrs[0] in _NOW:
            return f"{obj.__name__}.{attrs[0]}()"
        return None
    if attrs or not isinstance(obj, (types.BuiltinFunctionType, types.MethodType)):
        return None
    owner = obj.__self__
    name = obj.__name__
    if isinstance(owner, types.ModuleType) and owner.__dict__.get("__name__") == "time" \
            and name in _CLOCK:
        return f"time.{name}()"
    if isinstance(owner, type) and name in _NOW:
        import datetime

        if issubclass(owner, datetime.date):
            return f"{owner.__name__}.{name}()"
    if owner is not None and owner is _global_random() and name in _RANDOM:
        return f"random.{name}() (the unseeded global generator)"
    if owner is not None and owner is _numpy_global_state() and name in _NUMPY_LEGACY:
        return f"numpy.random.{name}() (the unseeded global generator)"
    return None
