"""A fingerprint sees every change a call depends on: rebound and mutated globals, helpers reached
through modules and containers, defaults, closures, the classes of objects — and a result is only
ever stored under the fingerprint of the values it ran with."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest
from helpers import run_python

from pythagoras_p2p import kw_args
from pythagoras_p2p.identity.encoding import value_address
from pythagoras_p2p.identity.fingerprint import fingerprint, identify

# --------------------------------------------------------------------------- globals change


def _module(source: str, name: str = "cell") -> types.ModuleType:
    """A namespace like a notebook's: functions defined by exec() in it, globals edited later."""
    module = types.ModuleType(name)
    module.__dict__["__name__"] = "__main__"
    exec(textwrap.dedent(source), module.__dict__)
    return module


SCALE = """
FACTOR = 2
CONF = {"k": 1}
ARR = np.arange(4)

def scale(*, x):
    return x * FACTOR + CONF["k"] + int(ARR.sum())
"""


@pytest.fixture
def ns(cloud):
    module = _module("import numpy as np\n" + SCALE)
    module.cloud = cloud
    return module, cloud.add_pure_function(module.scale)


def test_a_rebound_global_is_seen_at_the_next_call(ns, cloud):
    module, scale = ns
    assert scale(x=2) == 4 + 1 + 6
    module.FACTOR = 3  # a notebook cell edited and run again
    assert scale(x=2) == 6 + 1 + 6
    module.FACTOR = 2
    assert scale(x=2) == 4 + 1 + 6  # the first result, under its own fingerprint


def test_a_global_dict_mutated_in_place_is_seen(ns):
    module, scale = ns
    assert scale(x=1) == 2 + 1 + 6
    module.CONF["k"] = 5
    assert scale(x=1) == 2 + 5 + 6
    module.CONF["k"] = 1.0  # equal, but another type: observably different
    assert type(scale(x=1)) is float


def test_an_array_global_changed_in_place_is_seen(ns):
    module, scale = ns
    assert scale(x=0) == 1 + 6
    module.ARR[0] = 100
    assert scale(x=0) == 1 + 106


def test_workers_receive_the_values_that_were_fingerprinted(ns):
    module, scale = ns
    assert scale.sync_parallel([kw_args(x=i) for i in range(3)]) == [7, 9, 11]
    module.FACTOR = 10
    module.CONF["k"] = 0
    assert scale.sync_parallel([kw_args(x=i) for i in range(3)]) == [6, 16, 26]
    module.ARR[:] = 0
    assert scale.sync_remote(x=1) == 10


def test_a_result_is_never_stored_under_the_fingerprint_of_other_values(ns):
    module, scale = ns
    before = scale.fingerprint
    module.FACTOR = 3
    assert scale(x=2) == 13
    module.FACTOR = 2
    assert scale.fingerprint == before
    assert scale(x=2) == 11  # computed with 2: not the result of FACTOR = 3


def test_the_store_is_not_poisoned_for_a_fresh_process(home):
    script = textwrap.dedent("""
        import sys
        from pythagoras_p2p import LocalCloud
        cloud = LocalCloud(workers=1)
        FACTOR = 2

        @cloud.add_pure_function
        def scale(*, x):
            return x * FACTOR

        print(scale(x=2))
        if sys.argv[-1] == "edit":
            FACTOR = 3
            print(scale(x=2))
        cloud.close()
    """)
    edited = run_python(script.replace("sys.argv[-1]", "'edit'"), env={"PYTHAGORAS_HOME": str(home)})
    assert edited.stdout.split() == ["4", "6"]
    fresh = run_python(script, env={"PYTHAGORAS_HOME": str(home)})
    assert fresh.stdout.split() == ["4"]


def test_a_global_defined_after_the_first_call_and_a_shadowed_builtin_are_seen(cloud):
    module = _module("""
        def f(*, x):
            return len(x)
    """)
    f = cloud.add_pure_function(module.f)
    assert f(x=[1, 2, 3]) == 3
    module.len = lambda items: 0  # a global now hides the builtin
    assert f(x=[1, 2, 3]) == 0


def test_a_closure_cell_and_a_helper_default_count(cloud):
    module = _module("""
        def helper(v, k=2):
            return v * k

        def make():
            offset = 1
            def f(*, x):
                return helper(x) + offset
            def set_offset(v):
                nonlocal offset
                offset = v
            return f, set_offset
    """)
    inner, set_offset = module.make()
    f = cloud.add_pure_function(inner)
    assert f(x=3) == 7
    set_offset(100)
    assert f(x=3) == 106
    module.helper.__defaults__ = (10,)
    assert f(x=3) == 130


def test_the_hit_checks_identity_only_for_values_that_cannot_change_in_place():
    module = _module("""
        import math
        K = 3
        NAME = "n"
        PAIR = (1, "a", range(3))
        import pathlib
        ROOT = pathlib.Path("/data")
        def helper(v):
            return math.floor(v) * K
        def f(*, x):
            return helper(x) + len(NAME) + PAIR[0] + len(str(ROOT))
    """)
    identity = identify(module.f)
    assert identity.values == ()  # nothing to hash again on a hit
    assert identity.holds()


# --------------------------------------------------------------------------- user code reached


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A package of the user's own project, importable, whose files the test edits."""
    root = tmp_path / "project"
    (root / "mylib").mkdir(parents=True)
    (root / "mylib" / "__init__.py").write_text("from . import sub\n\ndef helper(x):\n    return x + 10\n")
    (root / "mylib" / "sub.py").write_text("def deep(x):\n    return x * 2\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # edits within a second are seen
    yield root
    for name in [n for n in sys.modules if n == "mylib" or n.startswith("mylib.")]:
        del sys.modules[name]


def _reload_project():
    import importlib

    import mylib

    if "mylib.sub" in sys.modules:
        importlib.reload(sys.modules["mylib.sub"])
    return importlib.reload(mylib)


def test_editing_a_helper_of_a_user_module_changes_the_fingerprint(project):
    import mylib

    module = _module("""
        import mylib
        def via_module(*, x):
            return mylib.helper(x) + mylib.sub.deep(x)
        def via_import_inside(*, x):
            from mylib import helper
            import mylib.sub as s
            return helper(x) + s.deep(x)
    """)
    first = [fingerprint(module.via_module), fingerprint(module.via_import_inside)]
    (project / "mylib" / "__init__.py").write_text(
        "from . import sub\n\ndef helper(x):\n    return x * 1000 + 10\n")
    module.mylib = _reload_project()
    second = [fingerprint(module.via_module), fingerprint(module.via_import_inside)]
    assert first[0] != second[0] and first[1] != second[1]
    (project / "mylib" / "sub.py").write_text("def deep(x):\n    return x * 3\n")
    module.mylib = _reload_project()
    third = [fingerprint(module.via_module), fingerprint(module.via_import_inside)]
    assert second[0] != third[0] and second[1] != third[1]
    assert mylib is not None


def test_an_edited_user_module_recomputes_in_a_fresh_process(project, home):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(project)!r})
        import mylib
        from pythagoras_p2p import LocalCloud
        cloud = LocalCloud(workers=1)

        @cloud.add_pure_function
        def g(*, x):
            return mylib.helper(x)

        print(g(x=1))
        cloud.close()
    """)
    assert run_python(script, env={"PYTHAGORAS_HOME": str(home)}).stdout.split() == ["11"]
    (project / "mylib" / "__init__.py").write_text("def helper(x):\n    return x * 1000 + 10\n")
    assert run_python(script, env={"PYTHAGORAS_HOME": str(home)}).stdout.split() == ["1010"]


def test_functions_held_in_a_container_are_followed_by_content(cloud):
    module = _module("""
        def sq(v):
            return v * v
        OPS = {"op": sq}
        TABLE = [sq]
        def f(*, x):
            return OPS["op"](x) + TABLE[0](x)
    """)
    f = cloud.add_pure_function(module.f)
    assert f(x=3) == 18
    exec("def sq(v):\n    return v * v * v\n", module.__dict__)  # the helper's cell run again
    module.OPS["op"] = module.sq
    assert f(x=3) == 27 + 9
    module.TABLE[0] = module.sq
    assert f(x=3) == 54


def test_an_object_of_a_user_class_is_addressed_with_its_class_code():
    first = _module("""
        class Model:
            def __init__(self, k):
                self.k = k
            def predict(self, x):
                return x * self.k
    """)
    second = _module("""
        class Model:
            def __init__(self, k):
                self.k = k
            def predict(self, x):
                return x + self.k
    """)
    twin = _module("""
        class Model:
            def __init__(self, k):
                self.k = k
            def predict(self, x):  # same code, another cell
                return x * self.k
    """)
    a, b, c = first.Model(2), second.Model(2), twin.Model(2)
    assert value_address(a) != value_address(b)
    assert value_address(a) == value_address(c)
    assert value_address([a]) != value_address([b])  # nested ones too
    first.Model.predict = second.Model.predict  # patched in place
    assert value_address(a) == value_address(b)


def test_an_installed_package_counts_by_name_and_version(monkeypatch):

    module = _module("""
        import numpy
        def f(*, x):
            return numpy.sum(x)
    """)
    before = fingerprint(module.f)
    from pythagoras_p2p.identity import usercode

    monkeypatch.setitem(usercode._versions, "numpy", "0.0-other")
    assert fingerprint(module.f) != before


def test_a_module_attribute_that_cannot_be_fingerprinted_but_is_only_named_does_not_fail(project):
    (project / "mylib" / "__init__.py").write_text(
        "import threading\nvalues = threading.Lock()\n\ndef helper(x):\n    return x + 1\n")
    mylib = _reload_project()
    module = _module("""
        def f(*, x):
            return mylib.helper(x.values)
    """)
    module.mylib = mylib
    assert len(fingerprint(module.f)) == 32


def test_a_mutual_recursion_through_a_registry_terminates_and_is_stable():
    module = _module("""
        REGISTRY = {}
        def f(*, x):
            return 0 if x <= 0 else REGISTRY["g"](x=x - 1)
        def g(*, x):
            return f(x=x)
        REGISTRY["g"] = g
    """)
    assert fingerprint(module.f) == fingerprint(module.f)


def test_a_self_containing_argument_is_an_error_naming_the_argument(cloud):
    from pythagoras_p2p.errors import SerializationError

    f = cloud.add_pure_function(_module("def f(*, items):\n    return len(items)\n").f)
    loop: list = [1]
    loop.append(loop)
    with pytest.raises(SerializationError, match=r"argument 'items'.*contains itself"):
        f(items=loop)
    table: dict = {}
    table["self"] = table
    with pytest.raises(SerializationError, match=r"argument 'items'.*contains itself"):
        f.sync_parallel([{"items": table}])


def test_a_module_attribute_read_with_getattr_and_a_constant_name_counts(project):
    (project / "mylib" / "__init__.py").write_text("K = 1\n")
    mylib = _reload_project()
    module = _module("""
        def f(*, x):
            return x + getattr(mylib, "K")
    """)
    module.mylib = mylib
    before = fingerprint(module.f)
    mylib.K = 2
    assert fingerprint(module.f) != before
