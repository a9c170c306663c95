"""The record pickler's reducers and what it ships (``pythagoras_p2p.execution.shipping``)."""

from __future__ import annotations

import functools
import importlib.resources._common as installed
import pickle
import sys
import threading

import cloudpickle

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


class _Gate:
    """A global whose pickling waits, once armed, until it is let through (its events are its
    instance's: they are not pickled, and the module stays shippable)."""

    def __init__(self, live: bool = False):
        if live:
            self.armed, self.inside, self.go = (threading.Event() for _ in range(3))

    def __reduce__(self):
        if getattr(self, "armed", None) is not None and self.armed.is_set():
            self.armed.clear()
            self.inside.set()
            self.go.wait(10)
        return _Gate, ()


GATE = _Gate(live=True)


def first(x):
    return GATE, x


def second(x):
    return x + 1


def test_records_made_at_once_in_two_threads_keep_their_module_registered():
    # async_parallel makes its record in a thread while the caller makes another for a
    # function of the same module: the first to finish unregistered the module under the
    # other's feet, whose own unregister then failed ("... is not registered for pickle by
    # value"); a module must never be unregistered more often than it was registered
    errors, shipped = [], []

    def make(func):
        try:
            shipped.append(ship(func, coarse=False))
        except Exception as exc:  # noqa: BLE001 - what the test reports
            errors.append(exc)

    GATE.go.clear()
    GATE.armed.set()
    one = threading.Thread(target=make, args=(first,))
    one.start()
    assert GATE.inside.wait(10)  # `first`'s record is being pickled, its module registered
    two = threading.Thread(target=make, args=(second,))
    two.start()
    two.join(0.3)
    GATE.go.set()
    one.join(10)
    two.join(10)
    assert not errors and len(shipped) == 2
    assert __name__ not in cloudpickle.list_registry_pickle_by_value()
    for shipment in shipped:
        func, modules = pickle.loads(shipment.pickled)
        assert __name__ in modules


def test_a_module_reached_under_two_names_is_registered_and_unregistered_once(monkeypatch):
    monkeypatch.setitem(sys.modules, "alias_of_" + __name__, sys.modules[__name__])
    import importlib

    alias = importlib.import_module("alias_of_" + __name__)
    monkeypatch.setitem(globals(), "alias", alias)
    shipment = ship(uses_alias, coarse=False)
    assert pickle.loads(shipment.pickled)[0](2) == 3
    assert __name__ not in cloudpickle.list_registry_pickle_by_value()


def uses_alias(x):
    return alias.second(x)  # noqa: F821 - set by the test


def test_a_module_the_user_registered_stays_registered():
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        ship(second, coarse=False)
        ship(second, coarse=False)
        assert __name__ in cloudpickle.list_registry_pickle_by_value()
    finally:
        cloudpickle.unregister_pickle_by_value(module)
