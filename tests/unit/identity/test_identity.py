"""Function fingerprints and call addresses: what makes two calls the same."""

from __future__ import annotations

import builtins
import importlib.util
import itertools
import os
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
from helpers import run_python

from pythagoras_p2p.errors import FingerprintError, SerializationError
from pythagoras_p2p.identity.calls import call_address
from pythagoras_p2p.identity.fingerprint import fingerprint

# --------------------------------------------------------------------------- the texts

# The base text uses what tends to trip a fingerprint: a docstring in a function that also uses
# None, a method call on a module imported in the same compilation unit (compiled differently in
# a notebook, where each statement is compiled on its own), a try block, a frozenset constant and
# a set global (both hash-seed dependent if pickled), a helper function and a global constant.
BASE = '''\
import math

SCALE = 3
TAGS = {"red", "green", "blue"}


def helper(v):
    return math.floor(v) * SCALE


def f(*, x, y=2):
    """Add things up."""
    total = 0
    last = None
    for i in range(x):
        if i % 2:
            total += helper(i + y)
        elif str(i) in {"4", "6", "8"}:
            last = i
    try:
        root = math.sqrt(total)
    except ValueError:
        root = None
    return [total, last, root, sorted(TAGS)]
'''

COSMETIC = {
    "no_docstring": BASE.replace('    """Add things up."""\n', ""),
    "other_docstring": BASE.replace(
        '    """Add things up."""\n',
        '    """Sum the helper over the odd numbers below x.\n\n    Also returns a root.\n    """\n',
    ),
    "comments": '''\
# A module comment.
import math  # the math module

SCALE = 3  # how much
TAGS = {"red", "green", "blue"}


def helper(v):
    # floor, then scale
    return math.floor(v) * SCALE


def f(*, x, y=2):
    """Add things up."""
    total = 0  # running sum
    last = None
    # walk
    for i in range(x):
        if i % 2:  # odd
            total += helper(i + y)
        elif str(i) in {"4", "6", "8"}:
            last = i  # remember it
    try:
        root = math.sqrt(total)
    except ValueError:  # cannot happen
        root = None
    # done
    return [total, last, root, sorted(TAGS)]
''',
    "annotations": '''\
from __future__ import annotations

import math

SCALE: int = 3
TAGS: set[str] = {"red", "green", "blue"}


def helper(v: float) -> int:
    return math.floor(v) * SCALE


def f(*, x: int, y: int = 2) -> list[object]:
    """Add things up."""
    total: int = 0
    last: int | None = None
    for i in range(x):
        if i % 2:
            total += helper(i + y)
        elif str(i) in {"4", "6", "8"}:
            last = i
    try:
        root: float | None = math.sqrt(total)
    except ValueError:
        root = None
    return [total, last, root, sorted(TAGS)]
''',
    "formatting": '''\
import math
SCALE = 3
TAGS = {"blue", "red", "green"}
def helper(v): return math.floor(v)*SCALE



def f(*,
      x,
      y = 2,
      ):

    """Add things up."""

    total = 0

    last = None
    for i in range(
        x
    ):
        if i % 2: total += helper(
            i + y
        )
        elif (str(i)
              in {"8", "6", "4"}):
            last = i
    try: root = math.sqrt(total)
    except ValueError: root = None
    return [
        total,
        last,
        root,
        sorted(TAGS),
    ]
''',
    "moved": "\n" * 40 + "# padding\n" * 5 + BASE.replace(
        "def helper(v):\n    return math.floor(v) * SCALE\n", ""
    ) + "\n\n\ndef helper(v):\n    return math.floor(v) * SCALE\n",
}

LOGIC = {
    "constant": BASE.replace("if i % 2:", "if i % 3:"),
    "operator": BASE.replace("total += helper", "total -= helper"),
    "renamed_parameter": BASE.replace("y=2", "z=2").replace("i + y", "i + z"),
    "frozenset_constant": BASE.replace('{"4", "6", "8"}', '{"4", "6", "9"}'),
    "helper_body": BASE.replace("math.floor(v) * SCALE", "math.ceil(v) * SCALE"),
    "global_constant": BASE.replace("SCALE = 3", "SCALE = 4"),
    "global_set": BASE.replace('"blue"}', '"cyan"}'),
    "function_name": BASE.replace("def f(", "def f2(") + "\nf = f2\n",
}


def test_the_variants_really_are_edits():
    texts = [BASE, *COSMETIC.values(), *LOGIC.values()]
    assert len(set(texts)) == len(texts)


# --------------------------------------------------------------------------- four ways


def fp_exec(src: str) -> str:
    ns: dict = {}
    exec(compile(src, "<string>", "exec"), ns)
    return fingerprint(ns["f"]).hex()


_module_counter = itertools.count()


@pytest.fixture
def import_file(tmp_path):
    """Write a source text to a fresh .py file and import it as a module."""
    names = []

    def load(src: str):
        name = f"pfmod_{os.getpid()}_{next(_module_counter)}"
        path = tmp_path / f"{name}.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        names.append(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    """An IPython shell (notebook cells are run through it), undone afterwards."""
    saved_main = sys.modules.get("__main__")
    saved_hooks = sys.displayhook, sys.excepthook
    had_marker = hasattr(builtins, "__IPYTHON__")
    saved_ipythondir = os.environ.get("IPYTHONDIR")
    os.environ["IPYTHONDIR"] = str(tmp_path_factory.mktemp("ipython"))
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    sh = InteractiveShell.instance(config=config)
    try:
        yield sh
    finally:
        InteractiveShell.clear_instance()
        sys.modules["__main__"] = saved_main
        sys.displayhook, sys.excepthook = saved_hooks
        if not had_marker and hasattr(builtins, "__IPYTHON__"):
            del builtins.__IPYTHON__
        if saved_ipythondir is None:
            os.environ.pop("IPYTHONDIR", None)
        else:
            os.environ["IPYTHONDIR"] = saved_ipythondir


def run_cells(shell, *cells: str):
    for cell in cells:
        result = shell.run_cell(cell)
        if not result.success:
            raise AssertionError(f"cell failed: {result.error_before_exec or result.error_in_exec}")
    return shell.user_ns


def fp_notebook(shell, src: str) -> str:
    shell.user_ns.pop("f", None)
    return fingerprint(run_cells(shell, src)["f"]).hex()


_PRINT_FP = "\nfrom pythagoras_p2p.identity.fingerprint import fingerprint as _fp\nprint('FP', _fp(f).hex())\n"


def _read_fp(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("FP ")]
    assert len(lines) == 1, stdout
    return lines[0][3:]


def fp_python_c(src: str, seed: str = "0") -> str:
    return _read_fp(run_python(src + _PRINT_FP, env={"PYTHONHASHSEED": seed}).stdout)


def fp_script(src: str, path, seed: str = "0") -> str:
    path.write_text(src + _PRINT_FP)
    env = {**os.environ, "PYTHONHASHSEED": seed}
    proc = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return _read_fp(proc.stdout)


def _check_variants(get_fp) -> None:
    base = get_fp(BASE)
    for name, src in COSMETIC.items():
        assert get_fp(src) == base, f"cosmetic edit {name!r} changed the fingerprint"
    logic = {name: get_fp(src) for name, src in LOGIC.items()}
    for name, fp in logic.items():
        assert fp != base, f"logic edit {name!r} kept the fingerprint"
    assert len(set(logic.values())) == len(logic)


def test_variants_in_exec():
    _check_variants(fp_exec)


def test_variants_in_an_imported_module(import_file):
    _check_variants(lambda src: fingerprint(import_file(src).f).hex())


def test_variants_in_a_notebook(shell):
    _check_variants(lambda src: fp_notebook(shell, src))


def test_variants_in_python_c():
    # each run with its own hash seed: set and frozenset contents must not depend on it
    seeds = itertools.count(1)
    _check_variants(lambda src: fp_python_c(src, seed=str(next(seeds))))


def test_same_text_same_fingerprint_in_every_way(shell, import_file, tmp_path):
    expected = fp_exec(BASE)
    assert fingerprint(import_file(BASE).f).hex() == expected
    assert fp_notebook(shell, BASE) == expected
    assert fp_python_c(BASE, seed="7") == expected
    assert fp_script(BASE, tmp_path / "script.py", seed="8") == expected


def test_notebook_split_into_cells(shell):
    # imports and globals in earlier cells, as notebooks are written
    expected = fp_exec(BASE)
    head, _, rest = BASE.partition("\n\ndef helper")
    helper_cell, _, f_cell = ("def helper" + rest).partition("\n\ndef f")
    shell.user_ns.pop("f", None)
    ns = run_cells(shell, "import math", head.replace("import math\n", ""), helper_cell,
                   "def f" + f_cell)
    assert fingerprint(ns["f"]).hex() == expected


def test_a_docstring_in_a_function_using_none():
    without = "def f(*, x):\n    y = x + 1\n"  # an implicit `return None`
    with_doc = 'def f(*, x):\n    "Doc."\n    y = x + 1\n'
    changed = "def f(*, x):\n    y = x + 2\n"
    assert fp_exec(without) == fp_exec(with_doc)
    assert fp_exec(without) != fp_exec(changed)


NESTED = """\
def f(*, x):
    def g(v):
        return v + 1
    return list(map(lambda q: g(q), x))
"""


def test_nested_function_docstrings_and_lambdas():
    with_doc = NESTED.replace("def g(v):\n", 'def g(v):\n        """inner doc"""\n')
    assert fp_exec(with_doc) == fp_exec(NESTED)
    inner_edit = NESTED.replace("v + 1", "v + 2")
    lambda_edit = NESTED.replace("g(q)", "g(q) * 2")
    assert len({fp_exec(NESTED), fp_exec(inner_edit), fp_exec(lambda_edit)}) == 3


def test_pure_function_fingerprint_is_the_function_fingerprint(cloud):
    ns: dict = {}
    exec(compile(BASE, "<string>", "exec"), ns)
    pf = cloud.add_pure_function(ns["f"])
    assert pf.fingerprint == fingerprint(ns["f"])
    assert len(pf.fingerprint) == 32
    decorated: dict = {"cloud": cloud}
    exec(compile(BASE.replace("def f(", "@cloud.add_pure_function\ndef f("), "<string>", "exec"),
         decorated)
    assert decorated["f"].fingerprint == pf.fingerprint
    assert decorated["f"](x=5) == [9 + 15, 4, pytest.approx(24**0.5), ["blue", "green", "red"]]


# --------------------------------------------------------------------------- what globals count


def define(src: str, cloud=None) -> dict:
    ns: dict = {"cloud": cloud}
    exec(compile(src, "<string>", "exec"), ns)
    return ns


HELPER_PURE = """
@cloud.add_pure_function
def helper(*, v):
    return v * 2

@cloud.add_pure_function
def caller(*, x):
    return helper(v=x) + 1
"""


def test_editing_a_helper_pure_function_changes_the_caller(cloud):
    base = define(HELPER_PURE, cloud)
    same = define(HELPER_PURE.replace("def helper(*, v):", 'def helper(*, v):\n    """doc"""'),
                  cloud)
    edited = define(HELPER_PURE.replace("v * 2", "v * 3"), cloud)
    assert base["caller"].fingerprint == same["caller"].fingerprint
    assert base["caller"].fingerprint != edited["caller"].fingerprint
    assert base["caller"](x=4) == 9
    assert edited["caller"](x=4) == 13


PLAIN_HELPERS = """
def inner(v):
    return v + 1

def middle(v):
    return inner(v) * 2

def unrelated(v):
    return v - 1

@cloud.add_pure_function
def top(*, x):
    return middle(x)
"""


def test_editing_a_plain_helper_two_levels_deep_changes_the_caller(cloud):
    base = define(PLAIN_HELPERS, cloud)["top"].fingerprint
    assert define(PLAIN_HELPERS, cloud)["top"].fingerprint == base
    assert define(PLAIN_HELPERS.replace("v + 1", "v + 2"), cloud)["top"].fingerprint != base
    assert define(PLAIN_HELPERS.replace("* 2", "* 3"), cloud)["top"].fingerprint != base
    assert define(PLAIN_HELPERS.replace("v - 1", "v - 5"), cloud)["top"].fingerprint == base
    assert define(PLAIN_HELPERS.replace("return v + 1", "# note\n    return v + 1"),
                  cloud)["top"].fingerprint == base


def test_global_constants_by_value():
    src = "K = {}\n\ndef f(*, x):\n    return x + len(K)\n"
    assert fp_exec(src.format("3")) == fp_exec(src.format("1 + 2"))
    assert fp_exec(src.format("3")) != fp_exec(src.format("4"))
    assert fp_exec(src.format("3")) != fp_exec(src.format("3.0"))
    # a function that iterates a global dict sees its insertion order: it counts
    assert fp_exec(src.format("{'a': 1, 'b': 2}")) != fp_exec(src.format("{'b': 2, 'a': 1}"))
    assert fp_exec(src.format("{'a': 1, 'b': 2}")) != fp_exec(src.format("{'a': 1, 'b': 3}"))

    def with_global(value):
        ns: dict = {"K": value}
        exec("def f(*, x):\n    return x + K.sum()\n", ns)
        return fingerprint(ns["f"])

    assert with_global(np.arange(5)) == with_global(np.arange(5).copy())
    assert with_global(np.arange(5)) != with_global(np.arange(1, 6))
    frame = pd.DataFrame({"a": [1, 2]})
    assert with_global(frame) == with_global(pd.DataFrame({"a": np.array([1, 2])}))
    assert with_global(frame) != with_global(pd.DataFrame({"a": [1, 3]}))


def test_a_global_defined_after_decoration_is_resolved_at_the_first_call(cloud):
    late = define("@cloud.add_pure_function\ndef f(*, x):\n    return x + LATER\n\nLATER = 5\n",
                  cloud)
    early = define("LATER = 5\n\n@cloud.add_pure_function\ndef f(*, x):\n    return x + LATER\n",
                   cloud)
    assert late["f"](x=1) == 6
    assert late["f"].fingerprint == early["f"].fingerprint


def test_modules_by_name():
    src = "import {} as m\n\ndef f(*, x):\n    return m.sqrt(x)\n"
    assert fp_exec(src.format("math")) == fp_exec(src.format("math"))
    assert fp_exec(src.format("math")) != fp_exec(src.format("cmath"))


def test_functions_of_installed_packages_by_name():
    src = "from {} import {} as join\n\ndef f(*, x):\n    return join(x, 'a')\n"
    assert fp_exec(src.format("os.path", "join")) == fp_exec(src.format("posixpath", "join"))
    assert fp_exec(src.format("os.path", "join")) != fp_exec(src.format("shlex", "join"))


RECURSION = """
@cloud.add_pure_function
def fact(*, n):
    return 1 if n <= 1 else n * fact(n=n - 1)

def is_even(n):
    return True if n == 0 else is_odd(n - 1)

def is_odd(n):
    return False if n == 0 else is_even(n - 1)

@cloud.add_pure_function
def parity(*, n):
    return is_even(n)

@cloud.add_pure_function
def ping(*, n):
    return 0 if n == 0 else pong(n=n - 1) + 1

@cloud.add_pure_function
def pong(*, n):
    return 0 if n == 0 else ping(n=n - 1) + 10
"""


def test_recursion_terminates_and_is_deterministic(cloud):
    a, b = define(RECURSION, cloud), define(RECURSION, cloud)
    for name in ("fact", "parity", "ping", "pong"):
        assert a[name].fingerprint == b[name].fingerprint
    assert fingerprint(a["is_even"]) == fingerprint(b["is_even"])
    assert fingerprint(a["is_even"]) != fingerprint(a["is_odd"])
    assert a["ping"].fingerprint != a["pong"].fingerprint
    assert a["fact"](n=5) == 120
    assert a["parity"](n=7) is False
    assert a["ping"](n=3) == 12
    edited = define(RECURSION.replace("is_even(n - 1)", "is_even(n - 1) and True"), cloud)
    assert edited["parity"].fingerprint != a["parity"].fingerprint
    edited = define(RECURSION.replace("+ 10", "+ 11"), cloud)
    assert edited["ping"].fingerprint != a["ping"].fingerprint
    assert edited["fact"].fingerprint == a["fact"].fingerprint


_CROSS_PROCESS = (
    "import pythagoras_p2p\ncloud = pythagoras_p2p.LocalCloud(connection='local')\n"
    + RECURSION
    + BASE
    + "\nimport json\nprint('FP', json.dumps({n: globals()[n].fingerprint.hex() "
    "for n in ('fact', 'parity', 'ping')} | {'f': fingerprint(f).hex()}))\n"
    "\n"
)


def test_fingerprints_are_stable_across_processes_and_hash_seeds(cloud, home):
    script = "from pythagoras_p2p.identity.fingerprint import fingerprint\n" + _CROSS_PROCESS
    results = [
        _read_fp(run_python(script, env={"PYTHONHASHSEED": seed, "PYTHAGORAS_HOME": str(home)}).stdout)
        for seed in ("1", "2")
    ]
    assert results[0] == results[1]
    ns = define(RECURSION, cloud)
    ns_base = define(BASE)
    import json

    here = json.loads(results[0])
    assert here == {
        "fact": ns["fact"].fingerprint.hex(),
        "parity": ns["parity"].fingerprint.hex(),
        "ping": ns["ping"].fingerprint.hex(),
        "f": fingerprint(ns_base["f"]).hex(),
    }


# --------------------------------------------------------------------------- unfingerprintable


LOCKED = """
import threading
LOCK = (n for n in range(1))  # a generator: no value to fingerprint, and not a handle

@cloud.add_pure_function
def guarded(*, x):
    with LOCK:
        return x + 1
"""


def test_unfingerprintable_global_fails_at_the_first_call_not_at_decoration(cloud):
    ns = define(LOCKED, cloud)  # decoration is fine
    with pytest.raises(FingerprintError) as info:
        ns["guarded"](x=1)
    message = str(info.value)
    assert "guarded" in message and "LOCK" in message
    assert "inside the function body" in message and "argument" in message
    assert isinstance(info.value, TypeError)
    with pytest.raises(FingerprintError):  # still, on the next call
        ns["guarded"](x=1)
    with pytest.raises(FingerprintError):
        ns["guarded"].address(x=1)


def test_unfingerprintable_global_of_a_helper_names_the_pure_function(cloud):
    ns = define(
        LOCKED.replace("with LOCK:\n        return x + 1", "return locked_helper(x)")
        + "\ndef locked_helper(v):\n    with LOCK:\n        return v\n",
        cloud,
    )
    with pytest.raises(FingerprintError, match="guarded.*LOCK"):
        ns["guarded"](x=1)


def test_an_attribute_named_like_an_unfingerprintable_global_is_not_a_global(cloud):
    ns = define(
        "import threading\nlock = threading.Lock()\n\n"
        "@cloud.add_pure_function\ndef attr(*, x):\n    return x.real.lock if False else x\n",
        cloud,
    )
    assert ns["attr"](x=2) == 2


def test_the_suggested_fix_works(cloud):
    ns = define(
        LOCKED.replace(
            "    with LOCK:\n", "    import threading\n    lock = threading.Lock()\n    with lock:\n"
        ),
        cloud,
    )
    assert ns["guarded"](x=1) == 2


# --------------------------------------------------------------------------- call addresses


CALLS = """
@cloud.add_pure_function
def f(*, x, y=10):
    return x + y

@cloud.add_pure_function
def g(*, x, y=10):
    return x + y
"""


def test_defaults_are_bound_into_the_call_address(cloud):
    f = define(CALLS, cloud)["f"]
    assert f.address(x=1) == f.address(x=1, y=10)
    assert f.address(x=1) != f.address(x=1, y=11)
    assert f.address(x=1) != f.address(x=2)
    assert f.address(x=1) == call_address(f.fingerprint, {"x": 1, "y": 10})[0]


def test_named_argument_order_does_not_matter(cloud):
    f = define(CALLS, cloud)["f"]
    assert f.address(x=1, y=2) == f.address(y=2, x=1)
    assert f.address(x={"a": 1, "b": 2}) != f.address(x={"b": 2, "a": 1})  # a dict's order shows
    fp = f.fingerprint
    assert call_address(fp, {"x": 1, "y": 2}) == call_address(fp, {"y": 2, "x": 1})


def test_argument_names_and_values_count(cloud):
    f = define(CALLS, cloud)["f"]
    fp = f.fingerprint
    assert call_address(fp, {"x": 1, "y": 2})[0] != call_address(fp, {"x": 2, "y": 1})[0]
    assert call_address(fp, {"a": 1})[0] != call_address(fp, {"b": 1})[0]
    assert f.address(x=1) != f.address(x=True)
    assert f.address(x=1) != f.address(x=1.0)
    assert f.address(x=[1, 2]) != f.address(x=(1, 2))
    address, per_argument = call_address(fp, {"x": [1, 2], "y": 3})
    assert len(address) == 32
    from pythagoras_p2p.identity.encoding import value_address

    # the per-argument addresses a call keeps: those of what may travel by address
    assert per_argument == {"x": value_address([1, 2])}


def test_different_function_different_address(cloud):
    ns = define(CALLS, cloud)
    assert ns["f"].address(x=1) != ns["g"].address(x=1)  # same body, other name
    other = define(CALLS.replace("return x + y", "return x - y", 1), cloud)
    assert ns["f"].address(x=1) != other["f"].address(x=1)
    again = define(CALLS, cloud)
    assert ns["f"].address(x=1) == again["f"].address(x=1)


def test_the_result_is_stored_at_the_call_address(cloud):
    f = define(CALLS, cloud)["f"]
    assert f(x=1) == 11
    from pythagoras_p2p.store.core import MISSING

    assert cloud.store.get_result(f.address(x=1, y=10)) == 11
    assert cloud.store.get_result(f.address(x=2)) is MISSING


def test_call_address_memo_gives_the_same_addresses(cloud):
    f = define(CALLS, cloud)["f"]
    big = np.arange(100_000)
    memo: dict = {}
    first = call_address(f.fingerprint, {"x": big, "y": 1}, memo)
    assert call_address(f.fingerprint, {"x": big, "y": 1}, memo) == first
    assert call_address(f.fingerprint, {"x": big.copy(), "y": 1}) == first
    assert len(memo) == 1


def test_unpicklable_argument_is_a_serialization_error(cloud):
    f = define(CALLS, cloud)["f"]
    with pytest.raises(SerializationError, match="lock"):
        f(x=threading.Lock())
    with pytest.raises(SerializationError, match="lock"):
        f.address(x=threading.Lock())
