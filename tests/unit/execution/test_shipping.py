"""The record pickler's reducers and what it ships (``pythagoras_p2p.execution.shipping``)."""

from __future__ import annotations

import functools
import importlib.resources._common as installed
import pickle

from pythagoras_p2p.execution.shipping import Unsent, reached_modules, ship


@functools.singledispatch
def kind(v):
    return "other"


@kind.register(int)
def _(v):
    return "int"


@functools.lru_cache(maxsize=4, typed=True)
def square(v):
    return v * v


def uses_helpers(x):
    return kind(x), square(x) if isinstance(x, int) else None, installed.as_file


def test_user_wrappers_are_rebuilt_and_installed_ones_stay_by_name():
    shipment = ship(uses_helpers, coarse=False)
    func, modules = pickle.loads(shipment.pickled)
    assert __name__ in modules and shipment.shipped[__name__]  # its module, whole
    assert func(3)[:2] == ("int", 9)
    assert func("a")[0] == "other"
    again = modules[__name__].square
    assert again is not square and again.cache_parameters() == {"maxsize": 4, "typed": True}
    assert func(3)[2] is installed.as_file  # an installed singledispatch: by name
    assert installed.__name__ not in reached_modules(uses_helpers)


def test_an_unsent_global_fails_at_any_use_naming_it():
    import pytest

    from pythagoras_p2p.errors import PythagorasError

    stand_in = pickle.loads(pickle.dumps(Unsent("LOCK", "lock")))
    for use in (lambda: stand_in.acquire, lambda: bool(stand_in), lambda: stand_in()):
        with pytest.raises(PythagorasError, match="'LOCK'"):
            use()
    assert "LOCK" in repr(stand_in)
