"""What a function can observe of its arguments is part of a call's address: the order of the
arguments ``**kw`` gathers, a dict's insertion order, one object twice against two equal ones,
an array's memory order, a MultiIndex's levels. Each pair below shared one address once, so the
second call of a pair got the first one's result; now each is computed, here and in a worker,
and a fresh process on the same home finds each stored under its own address.
"""

from __future__ import annotations

import enum
import json

import numpy as np
import pandas as pd
from helpers import run_python

from pythagoras_p2p.identity.calls import call_address
from pythagoras_p2p.identity.encoding import value_address

FP = bytes(range(32))

# Every call is made twice (the second time a hit) locally, then once more in a worker; the
# results of the two processes on one home must agree and match what the function sees.
_SCRIPT = r"""
import copy, enum, json, sys
import numpy as np, pandas as pd
from pythagoras_p2p import PCloud

cloud = PCloud(requires=None, connection=None)

class Color(enum.Enum):
    RED = 1
    GREEN = 2

@cloud.add_pure_function
def gathered(*, x=0, **kw):
    return list(kw)

@cloud.add_pure_function
def keys(*, d):
    return list(d)

@cloud.add_pure_function
def aliased(*, rows):
    return rows[0] is rows[1]

@cloud.add_pure_function
def one_object(*, a, b):
    return a is b["k"]

@cloud.add_pure_function
def ravelled(*, a):
    return a.ravel("K").tolist()

@cloud.add_pure_function
def levels(*, index):
    return [list(level) for level in index.levels]

@cloud.add_pure_function
def color(*, c):
    return c.name

row = [1, 2]
full = pd.MultiIndex.from_product([["a", "b"], [1, 2]])
c_order = np.arange(6).reshape(2, 3)
pairs = {
    "gathered": [(gathered, dict(a=1, b=2)), (gathered, dict(b=2, a=1)),
                 (gathered, dict(x=0, b=2, a=1))],
    "keys": [(keys, dict(d={"a": 1, "b": 2})), (keys, dict(d={"b": 2, "a": 1}))],
    "aliased": [(aliased, dict(rows=[row, row])), (aliased, dict(rows=[row, copy.copy(row)]))],
    "one_object": [(one_object, dict(a=row, b={"k": row})),
                   (one_object, dict(a=row, b={"k": copy.copy(row)}))],
    "ravelled": [(ravelled, dict(a=c_order)), (ravelled, dict(a=np.asfortranarray(c_order)))],
    "levels": [(levels, dict(index=full[:2])), (levels, dict(index=full[:2].remove_unused_levels()))],
    "color": [(color, dict(c=Color.RED)), (color, dict(c=Color.GREEN)), (color, dict(c=Color.RED))],
}
out = {}
for name, calls in pairs.items():
    out[name] = [[f(**kw), f(**kw), f.sync_remote(**kw)] for f, kw in calls]
print(json.dumps(out))
"""

EXPECTED = {
    "gathered": [["a", "b"], ["b", "a"], ["b", "a"]],
    "keys": [["a", "b"], ["b", "a"]],
    "aliased": [True, False],
    "one_object": [True, False],
    "ravelled": [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5]],
    "levels": [[["a", "b"], [1, 2]], [["a"], [1, 2]]],
    "color": ["RED", "GREEN", "RED"],
}


def test_what_a_function_sees_of_its_arguments_is_never_a_wrong_hit(tmp_path):
    env = {"PYTHAGORAS_HOME": str(tmp_path / "home")}
    for _ in range(2):  # the second process finds every call stored
        proc = run_python(_SCRIPT, env=env, timeout=180)
        seen = json.loads(proc.stdout.strip().splitlines()[-1])
        assert seen == {name: [[r, r, r] for r in results] for name, results in EXPECTED.items()}


# --------------------------------------------------------------------------- call addresses


def test_the_order_of_gathered_arguments_counts_and_that_of_named_ones_does_not():
    named = frozenset({"x", "y"})
    ab = call_address(FP, {"x": 1, "y": 2, "a": 1, "b": 2}, named=named)[0]
    assert ab == call_address(FP, {"y": 2, "a": 1, "x": 1, "b": 2}, named=named)[0]
    assert ab != call_address(FP, {"x": 1, "y": 2, "b": 2, "a": 1}, named=named)[0]
    # without **kw (named None, or every name named) the order never counts
    assert call_address(FP, {"a": 1, "b": 2})[0] == call_address(FP, {"b": 2, "a": 1})[0]
    assert (call_address(FP, {"x": 1, "y": 2}, named=named)[0]
            == call_address(FP, {"y": 2, "x": 1}, named=named)[0])


def test_a_function_with_kw_binds_defaults_without_reordering(cloud):
    def f(*, x=0, **kw):
        return list(kw)

    fn = cloud.add_pure_function(f)
    assert fn.address(a=1, b=2) == fn.address(x=0, a=1, b=2) == fn.address(a=1, x=0, b=2)
    assert fn.address(a=1, b=2) != fn.address(b=2, a=1)
    assert list(fn.bind((), {"b": 2, "a": 1})) == ["x", "b", "a"]


def test_one_object_in_two_arguments_counts():
    row = [1, 2]
    shared = call_address(FP, {"a": row, "b": {"k": [row]}})[0]
    assert shared == call_address(FP, {"b": {"k": [row]}, "a": row})[0]
    assert shared != call_address(FP, {"a": row, "b": {"k": [[1, 2]]}})[0]
    assert (call_address(FP, {"a": [1, 2], "b": {"k": [[1, 2]]}})[0]
            == call_address(FP, {"a": row, "b": {"k": [[1, 2]]}})[0])
    # which objects are shared counts, not only that some are
    x, y = [1], [1]
    assert (call_address(FP, {"a": [x, y], "b": [x]})[0]
            != call_address(FP, {"a": [x, y], "b": [y]})[0])
    # a large argument hashed once per run (memo) shares the same way
    array = np.arange(20_000)  # 160 KB: hashed once per run
    memo: dict = {}
    assert (call_address(FP, {"a": array, "b": [array]}, memo)[0]
            == call_address(FP, {"a": array, "b": [array]})[0]
            != call_address(FP, {"a": array, "b": [array.copy()]}, memo)[0])
    assert id(array) in memo


# --------------------------------------------------------------------------- enum members


class Shade(enum.Enum):
    LIGHT = "light"
    DARK = "dark"

    def describe(self):
        return self.value.upper()


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


def test_enum_members_by_class_name_and_value():
    assert value_address(Shade.LIGHT) == value_address(Shade("light"))
    addresses = {value_address(v) for v in (Shade.LIGHT, Shade.DARK, "light", Level.LOW, 1, Level.HIGH)}
    assert len(addresses) == 6
    for _ in range(3):  # again and again: answered from the class's token, never a hang
        assert value_address([Shade.LIGHT, {"k": Level.HIGH}]) == value_address(
            [Shade.LIGHT, {"k": Level.HIGH}])
    assert value_address(enum.Enum) != value_address(Shade)


def test_a_class_holding_its_own_instances_has_an_address(cloud):
    class Node:
        pass

    Node.FIRST = Node()
    Node.SECOND = Node()
    for _ in range(3):
        assert value_address(Node.FIRST) == value_address(Node.FIRST)


def test_sharing_across_pandas_and_numpy_values():
    frame = pd.DataFrame({"a": [1, 2]})
    assert value_address([frame, frame]) != value_address([frame, frame.copy()])
    assert value_address([frame, frame.copy()]) == value_address([frame.copy(), frame.copy()])
    array = np.arange(3)
    assert value_address({"a": array, "b": array}) != value_address({"a": array, "b": array.copy()})
    index = pd.Index([1, 2])  # immutable: its sharing is not numbered
    assert value_address([index, index]) == value_address([index, pd.Index([1, 2])])
