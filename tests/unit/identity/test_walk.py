"""The walk cannot be fooled: bound methods, wrappers, dynamic lookups, function and metaclass
attributes, shadowing, dict order — each change is seen by a new fingerprint *and* by the checks
of the old one (what a hit runs); the walk never calls a user object's ``__getattr__`` and never
loops; ``ignore_globals`` and the components for ``explain``."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest

from pythagoras_p2p.errors import FingerprintError, PureFunctionError
from pythagoras_p2p.identity.fingerprint import fingerprint, identify


def _module(source: str) -> types.ModuleType:
    """A namespace like a notebook's: functions defined by exec() in it, globals edited later."""
    module = types.ModuleType("cell")
    module.__dict__["__name__"] = "__main__"
    exec(textwrap.dedent(source), module.__dict__)
    return module


def _changes(source: str, change, name: str = "f") -> None:
    """``change(module)`` is seen: the old identity no longer holds, the new fingerprint differs."""
    module = _module(source)
    before = identify(getattr(module, name))
    assert before.holds()
    assert identify(getattr(module, name)).fp == before.fp  # stable while nothing changes
    change(module)
    assert not before.holds(), "a hit would answer the old result"
    assert fingerprint(getattr(module, name)) != before.fp


# --------------------------------------------------------------------------- bound methods


def test_a_bound_method_of_a_user_object_counts_with_its_object():
    _changes("""
        class Model:
            def __init__(self, k):
                self.k = k
            def predict(self, x):
                return x * self.k
        model = Model(2)
        predict = model.predict
        def f(*, x):
            return predict(x)
    """, lambda m: setattr(m.model, "k", 3))


def test_a_bound_method_of_a_dict_counts_with_the_dict():
    _changes("""
        CONFIG = {"a": 1}
        get = CONFIG.get
        def f(*, x):
            return get("a")
    """, lambda m: m.CONFIG.__setitem__("a", 2))


def test_bound_methods_of_a_pattern_and_a_string_count_with_them():
    import re

    _changes("""
        import re
        match = re.compile("a+").match
        def f(*, x):
            return match(x)
    """, lambda m: setattr(m, "match", re.compile("b+").match))
    _changes("""
        fmt = "{:.2f}".format
        def f(*, x):
            return fmt(x)
    """, lambda m: setattr(m, "fmt", "{:.3f}".format))


# --------------------------------------------------------------------------- wrappers


def _edit(func: types.FunctionType, source: str) -> None:
    """Give ``func`` the code of ``source`` (a cell run again, seen through the same object)."""
    scope: dict = {}
    exec(textwrap.dedent(source), scope)
    func.__code__ = next(v for v in scope.values() if isinstance(v, types.FunctionType)).__code__


@pytest.mark.parametrize("decorator", ["functools.lru_cache", "functools.cache",
                                       "functools.lru_cache(maxsize=4)", "contextlib.contextmanager"])
def test_a_helper_behind_an_installed_decorator_is_followed(decorator):
    _changes(f"""
        import contextlib, functools
        @{decorator}
        def h(x):
            return x + 1
        def f(*, x):
            return h(x)
    """, lambda m: _edit(m.h.__wrapped__, "def h(x):\n    return x + 2\n"))


def test_a_partial_counts_by_function_arguments_and_keywords():
    source = """
        import functools
        def h(x, k):
            return x * k
        p = functools.partial(h, k=2)
        def f(*, x):
            return p(x)
    """
    _changes(source, lambda m: m.p.keywords.__setitem__("k", 3))
    _changes(source, lambda m: _edit(m.h, "def h(x, k):\n    return x + k\n"))


def test_a_cached_property_counts_by_its_function():
    _changes("""
        import functools
        class Box:
            @functools.cached_property
            def size(self):
                return 1
        def f(*, x):
            return Box().size + x
    """, lambda m: _edit(m.Box.__dict__["size"].func, "def size(self):\n    return 2\n"))


def test_singledispatch_counts_every_implementation_and_new_registrations():
    source = """
        import functools
        @functools.singledispatch
        def h(x):
            return 0
        @h.register
        def _(x: int):
            return 1
        def f(*, x):
            return h(x)
    """
    _changes(source, lambda m: m.h.register(float, lambda x: 2))
    _changes(source, lambda m: _edit(m.h.registry[int], "def _(x: int):\n    return 5\n"))


# --------------------------------------------------------------------------- attributes


def test_an_attribute_set_on_a_function_counts():
    source = """
        def scale(x):
            return x * getattr(scale, "factor", 1)
        def f(*, x):
            return scale(x)
    """
    _changes(source, lambda m: setattr(m.scale, "factor", 3))  # a first attribute
    module = _module(source)
    module.scale.factor = 2
    _changes_module(module, lambda m: setattr(m.scale, "factor", 3))  # a changed one


def _changes_module(module: types.ModuleType, change) -> None:
    before = identify(module.f)
    change(module)
    assert not before.holds() and fingerprint(module.f) != before.fp


def test_an_attribute_of_a_user_metaclass_counts():
    _changes("""
        class Meta(type):
            K = 1
        class C(metaclass=Meta):
            pass
        def f(*, x):
            return C.K
    """, lambda m: setattr(m.Meta, "K", 2))


def test_a_class_attribute_that_starts_shadowing_an_inherited_one_is_seen():
    _changes("""
        class Base:
            K = 1
        class C(Base):
            pass
        def f(*, x):
            return C.K
    """, lambda m: setattr(m.C, "K", 2))


def test_a_module_attribute_read_with_a_default_is_seen_when_it_appears():
    module = _module("def f(*, x):\n    return getattr(mylib, 'X', 1)\n")
    module.mylib = _user_module("mylib_default", "Y = 0\n")
    _changes_module(module, lambda m: setattr(m.mylib, "X", 2))


def _user_module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(source, module.__dict__)
    return module  # not in sys.modules: the user's (made by exec)


def test_a_namespace_package_of_the_project_is_walked_by_content(tmp_path, monkeypatch):
    (tmp_path / "nsproj").mkdir()  # no __init__.py: a namespace package
    (tmp_path / "nsproj" / "helper.py").write_text("def h(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import nsproj.helper

    try:
        module = _module("def f(*, x):\n    return nsproj.helper.h(x)\n")
        module.nsproj = sys.modules["nsproj"]
        _changes_module(module, lambda m: _edit(nsproj.helper.h, "def h(x):\n    return x + 2\n"))
    finally:
        for name in ("nsproj", "nsproj.helper"):
            sys.modules.pop(name, None)


# --------------------------------------------------------------------------- dynamic lookups


def test_globals_subscript_covers_the_whole_module():
    _changes("""
        A = 1
        B = 2
        def f(*, x):
            return globals()[x]
    """, lambda m: setattr(m, "B", 3))


@pytest.mark.parametrize("lookup", ["getattr(mylib, x)", "vars(mylib)[x]"])
def test_a_computed_lookup_in_a_user_module_covers_the_whole_module(lookup):
    module = _module(f"def f(*, x):\n    return {lookup}\n")
    module.mylib = _user_module("mylib_dyn", "A = 1\nB = 2\n")
    _changes_module(module, lambda m: setattr(m.mylib, "B", 3))
    before = identify(module.f)
    module.mylib.C = 4  # a new one, too
    assert not before.holds()


def test_getattr_of_self_with_a_computed_name_stays_exact():
    module = _module("""
        class Box:
            a = 1
            def get(self, name):
                return getattr(self, name)
        def f(*, x):
            return Box().get(x)
        OTHER = 1
    """)
    before = identify(module.f)
    module.OTHER = 2  # not reached: no coarse walk for getattr(self, ...)
    assert before.holds()


def test_a_module_with_a_pep562_getattr_is_covered_whole():
    module = _module("def f(*, x):\n    return mylib.LAZY\n")
    module.mylib = _user_module("mylib_lazy", "TABLE = {'LAZY': 1}\n"
                                              "def __getattr__(name):\n    return TABLE[name]\n")
    _changes_module(module, lambda m: m.mylib.TABLE.__setitem__("LAZY", 2))


@pytest.mark.parametrize("body,construct", [
    ("importlib.import_module(x).K", "import_module"),
    ("__import__(x).K", "__import__"),
    ("sys.modules[x].K", "sys.modules"),
])
def test_a_computed_import_is_refused_naming_the_construct_and_the_fix(body, construct):
    module = _module(f"import importlib, sys\ndef f(*, x):\n    return {body}\n")
    with pytest.raises(FingerprintError, match=rf"{construct}.*`import` statements"):
        identify(module.f)


def test_an_import_module_with_a_constant_name_is_followed_like_an_import(monkeypatch):
    mylib = _user_module("mylib_const", "K = 1\n")
    monkeypatch.setitem(sys.modules, "mylib_const", mylib)
    module = _module("import importlib\ndef f(*, x):\n    return importlib.import_module('mylib_const').K\n")
    _changes_module(module, lambda m: setattr(mylib, "K", 2))


# --------------------------------------------------------------------------- never touch, never hang


def test_the_walk_never_calls_a_user_objects_getattr():
    module = _module("""
        class AttrDict(dict):  # easydict / addict style: missing attributes are made
            def __getattr__(self, key):
                return self.setdefault(key, AttrDict())
        class Strict(dict):
            def __getattr__(self, key):
                return self[key]  # KeyError for a missing one
        CFG = AttrDict(a=1)
        STRICT = Strict(b=2)
        def f(*, x):
            return CFG.a + STRICT.b
    """)
    _changes_module(module, lambda m: m.CFG.__setitem__("a", 5))
    assert list(module.CFG) == ["a"] and list(module.STRICT) == ["b"]
    assert identify(module.f).holds()


def test_self_referencing_classes_and_enums_end_and_hold():
    module = _module("""
        import enum
        class A:
            pass
        A.x = A()
        A.y = A()
        class Color(enum.Enum):
            RED = 1
            GREEN = 2
        def f(*, x):
            return A.x, Color.RED.value
    """)
    identity = identify(module.f)
    assert identity.holds()  # not refingerprinted at every call
    assert identify(module.f).fp == identity.fp


def test_a_lock_created_lazily_does_not_make_calls_fail(cloud):
    module = _module("""
        import threading
        _LOCK = None
        def f(*, x):
            global _LOCK
            if _LOCK is None:
                _LOCK = threading.Lock()
            with _LOCK:
                return x + 1
    """)
    f = cloud.add_pure_function(module.f)
    assert f(x=1) == 2
    assert f(x=2) == 3 and f(x=1) == 2
    identity = f.identity()
    import threading

    module._LOCK = threading.Lock()  # replaced: still checked
    assert not identity.holds()


# --------------------------------------------------------------------------- dict order


def test_the_insertion_order_of_a_global_dict_counts():
    _changes("""
        D = {"a": 1, "b": 2}
        def f(*, x):
            return list(D)
    """, lambda m: (m.D.clear(), m.D.update({"b": 2, "a": 1})))


# --------------------------------------------------------------------------- ignore_globals


def test_ignored_globals_are_neither_fingerprinted_nor_checked(cloud):
    module = _module("""
        _memo = {}
        def helper(v):
            _memo[v] = _memo.get(v, 0) + 1
            return v * 2
        def f(*, x):
            return helper(x)
    """)
    plain = cloud.add_pure_function(module.f)
    ignoring = cloud.add_pure_function(ignore_globals=("_memo",))(module.f)
    assert ignoring(x=1) == 2
    identity, plain_identity = ignoring.identity(), identify(module.f)
    module._memo["other"] = 1
    assert identity.holds() and not plain_identity.holds()
    assert ignoring.fingerprint != plain.fingerprint  # the promise itself is part of it


@pytest.mark.parametrize("bad", ["_memo", ("_memo", 3), ["not a name"], {"_memo": 1}])
def test_ignore_globals_is_validated(cloud, bad):
    with pytest.raises(PureFunctionError, match="ignore_globals"):
        cloud.add_pure_function(ignore_globals=bad)


# --------------------------------------------------------------------------- components


def test_components_name_each_part_and_change_with_it_alone(project_lib):
    module = _module("""
        import numpy as np
        import mylib_parts
        CONFIG = {"k": 1}
        def scale(v):
            return v * 2
        def f(*, x, y=2):
            return scale(x) + CONFIG["k"] + np.sum(y) + mylib_parts.K
    """)
    before = identify(module.f)
    labels = set(before.components)
    assert {"code of f", "global CONFIG", "helper __main__.scale", "package numpy (as np)",
            "module mylib_parts", "default keyword values"} <= labels, labels
    manifest = before.manifest()
    assert all(len(bytes.fromhex(h)) == 16 for h in manifest.values())
    module.CONFIG["k"] = 2
    after = identify(module.f).manifest()
    assert {label for label in manifest if manifest[label] != after[label]} == {"global CONFIG"}


@pytest.fixture
def project_lib(monkeypatch):
    monkeypatch.setitem(sys.modules, "mylib_parts", _user_module("mylib_parts", "K = 1\n"))


def test_a_module_of_the_users_named_like_one_of_the_standard_library_is_the_users(
        tmp_path, monkeypatch):
    """``nt`` is the standard library's name of Windows' ``os`` backend: a user's ``nt.py``
    was taken for it and named by version, so an edit of its classes was never seen."""
    import importlib

    from pythagoras_p2p.identity.usercode import is_user_code

    (tmp_path / "nt.py").write_text("class P:\n    def s(self):\n        return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "nt", raising=False)
    module = importlib.import_module("nt")
    try:
        assert is_user_code("nt")
        scope = {"P": module.P}
        exec("def f(*, x):\n    return P().s() + x\n", scope)
        before = fingerprint(scope["f"])
        exec("def s(self):\n    return 10\n", vars(module))
        module.P.s = module.s
        assert fingerprint(scope["f"]) != before
    finally:
        sys.modules.pop("nt", None)
    assert not is_user_code("os") and not is_user_code("collections") and not is_user_code("abc")
