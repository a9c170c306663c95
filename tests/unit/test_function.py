"""What @cloud.add_pure_function accepts, and how a wrong call is reported."""

from __future__ import annotations

import functools
import threading
import time

import pytest

from pythagoras_p2p import PureFunctionError, RemoteError, kw_args
from pythagoras_p2p import function as function_module
from pythagoras_p2p.errors import PythagorasError
from pythagoras_p2p.store.core import MISSING


def test_pure_function_error_is_a_type_error():
    assert issubclass(PureFunctionError, TypeError)
    assert issubclass(PureFunctionError, PythagorasError)


# --------------------------------------------------------------------------- decoration


def test_positional_parameters_are_rejected_with_the_fix(cloud):
    def area(width, height):
        return width * height

    with pytest.raises(PureFunctionError) as info:
        cloud.add_pure_function(area)
    message = str(info.value)
    assert "area" in message and "positional" in message
    assert "def area(*, width, height" in message


def test_positional_only_parameters_are_rejected(cloud):
    def scale(x, /, *, k):
        return x * k

    with pytest.raises(PureFunctionError, match=r"scale.*positional.*def scale\(\*, x"):
        cloud.add_pure_function(scale)


def test_star_args_are_rejected(cloud):
    def total(*numbers):
        return sum(numbers)

    with pytest.raises(PureFunctionError) as info:
        cloud.add_pure_function(total)
    message = str(info.value)
    assert "total" in message and "*numbers" in message and "keyword-only" in message


def test_star_args_after_keywords_are_rejected(cloud):
    def total(*numbers, start):
        return start + sum(numbers)

    with pytest.raises(PureFunctionError, match=r"total.*\*numbers"):
        cloud.add_pure_function(total)


def test_lambda_is_rejected(cloud):
    with pytest.raises(PureFunctionError) as info:
        cloud.add_pure_function(lambda *, x: x)
    message = str(info.value)
    assert "lambda" in message and "def" in message


def test_generator_is_rejected(cloud):
    def numbers(*, n):
        yield from range(n)

    with pytest.raises(PureFunctionError) as info:
        cloud.add_pure_function(numbers)
    message = str(info.value)
    assert "numbers" in message and "generator" in message and "list" in message


def test_coroutine_is_rejected(cloud):
    async def fetch(*, url):
        return url

    with pytest.raises(PureFunctionError) as info:
        cloud.add_pure_function(fetch)
    message = str(info.value)
    assert "fetch" in message and "async" in message and "def" in message


def test_async_generator_is_rejected(cloud):
    async def stream(*, n):
        for i in range(n):
            yield i

    with pytest.raises(PureFunctionError, match="stream.*generator"):
        cloud.add_pure_function(stream)


def test_method_defined_in_a_class_body_is_rejected(cloud):
    with pytest.raises(PureFunctionError) as info:

        class Model:
            @cloud.add_pure_function
            def predict(*, x):
                return x

    message = str(info.value)
    assert "Model.predict" in message and "method" in message and "module level" in message


def test_bound_method_and_staticmethod_are_rejected(cloud):
    class Model:
        def predict(self, *, x):
            return x

        @staticmethod
        def helper(*, x):
            return x

    with pytest.raises(PureFunctionError, match="method"):
        cloud.add_pure_function(Model().predict)
    with pytest.raises(PureFunctionError, match="staticmethod"):
        cloud.add_pure_function(Model.__dict__["helper"])


@pytest.mark.parametrize(
    "thing, kind",
    [
        (dict, "type"),
        (functools.partial(print, "x"), "partial"),
        (len, "builtin"),
        (42, "int"),
    ],
    ids=["class", "partial", "builtin", "int"],
)
def test_non_functions_are_rejected(cloud, thing, kind):
    with pytest.raises(PureFunctionError) as info:
        cloud.add_pure_function(thing)
    message = str(info.value)
    assert kind in message and "def" in message and "keyword-only" in message


def test_a_function_defined_in_a_function_is_accepted(cloud):
    def double(*, x):
        return 2 * x

    fn = cloud.add_pure_function(double)
    assert fn(x=4) == 8
    assert fn.__name__ == "double"
    assert fn.__wrapped__ is double


def test_decorating_twice_keeps_the_function(cloud):
    def double(*, x):
        return 2 * x

    once = cloud.add_pure_function(double)
    twice = cloud.add_pure_function(once)
    assert twice.__pythagoras_function__ is double
    assert twice.fingerprint == once.fingerprint


# --------------------------------------------------------------------------- calls


@pytest.fixture
def power(cloud):
    def power(*, base, exponent=2):
        return base**exponent

    return cloud.add_pure_function(power)


def test_positional_argument_is_a_type_error_naming_the_function(power):
    with pytest.raises(TypeError) as info:
        power(3)
    assert isinstance(info.value, PureFunctionError)
    message = str(info.value)
    assert "power" in message and "keyword" in message and "power(name=value" in message
    with pytest.raises(PureFunctionError, match="power"):
        power.sync_remote(3)
    with pytest.raises(PureFunctionError, match="power"):
        power.address()  # missing keyword: checked too


def test_unknown_keyword_argument(power):
    with pytest.raises(PureFunctionError) as info:
        power(base=2, exponant=3)
    message = str(info.value)
    assert "power" in message and "exponant" in message
    assert "base" in message and "exponent" in message  # what it does take


def test_missing_keyword_argument(power):
    with pytest.raises(PureFunctionError) as info:
        power(exponent=3)
    message = str(info.value)
    assert "power" in message and "missing" in message and "base" in message


def test_unknown_and_missing_with_all_parameters_count(power):
    # as many arguments as parameters, but one of them is not a parameter
    with pytest.raises(PureFunctionError, match="unexpected.*exp"):
        power(base=2, exp=3)


def test_good_calls(power):
    assert power(base=3) == 9
    assert power(base=2, exponent=10) == 1024
    assert power(exponent=3, base=2) == 8


def test_var_keyword_parameters_accept_extra_names(cloud):
    def collect(*, a, **rest):
        return (a, sorted(rest.items()))

    fn = cloud.add_pure_function(collect)
    assert fn(a=1, z=2, y=3) == (1, [("y", 3), ("z", 2)])
    with pytest.raises(PureFunctionError, match="missing.*'a'"):
        fn(z=2)


# --------------------------------------------------------------------------- sync_parallel input


def test_sync_parallel_rejects_a_dict(power):
    with pytest.raises(PureFunctionError) as info:
        power.sync_parallel({"base": 2})
    message = str(info.value)
    assert "power" in message and "iterable" in message and "kw_args" in message
    with pytest.raises(PureFunctionError, match="power"):
        power.sync_parallel(kw_args(base=2))


def test_sync_parallel_rejects_a_non_iterable(power):
    with pytest.raises(PureFunctionError) as info:
        power.sync_parallel(5)
    message = str(info.value)
    assert "power" in message and "iterable" in message and "int" in message


def test_sync_parallel_rejects_a_string(power):
    with pytest.raises(PureFunctionError, match="power.*iterable"):
        power.sync_parallel("base=2")


def test_sync_parallel_rejects_an_item_that_is_not_a_mapping(power):
    with pytest.raises(PureFunctionError) as info:
        power.sync_parallel([kw_args(base=1), (2, 3)])
    message = str(info.value)
    assert "power" in message and "item 1" in message and "tuple" in message
    assert "kw_args" in message


def test_sync_parallel_rejects_bad_items_from_a_generator(power):
    with pytest.raises(PureFunctionError, match="item 2.*int"):
        power.sync_parallel(kw_args(base=i) if i < 2 else i for i in range(4))


def test_sync_parallel_checks_arguments_of_every_item(power):
    with pytest.raises(PureFunctionError, match="power.*unexpected.*nope"):
        power.sync_parallel([kw_args(base=1), {"base": 2, "nope": 3}])
    with pytest.raises(PureFunctionError, match="non-string keys"):
        power.sync_parallel([{1: 2}])


def test_kw_args():
    k = kw_args(x=1, y="a")
    assert k == {"x": 1, "y": "a"}
    assert repr(k) == "kw_args(x=1, y='a')"


# --------------------------------------------------------------------------- SystemExit, KeyboardInterrupt
# In the caller's process a function's exception propagates as it is, as from a plain function;
# where it ran elsewhere, SystemExit and KeyboardInterrupt fail its call with a RemoteError (raised
# as they are here, they would end the caller), the original as its cause. Nothing is stored.


def quits(*, how):
    import sys

    if how == "exit":
        sys.exit(3)
    if how == "interrupt":
        raise KeyboardInterrupt("in the function")
    return how


@pytest.mark.parametrize("how, kind", [("exit", SystemExit), ("interrupt", KeyboardInterrupt)])
def test_a_plain_call_raises_systemexit_or_keyboardinterrupt_as_it_is(cloud, how, kind):
    f = cloud.add_pure_function(quits)
    with pytest.raises(kind):
        f(how=how)
    assert cloud.store.get_result(f.address(how=how)) is MISSING
    assert f(how="fine") == "fine"  # the lease was let go: the next call of this home runs


@pytest.mark.parametrize("how, kind", [("exit", SystemExit), ("interrupt", KeyboardInterrupt)])
def test_sync_remote_fails_the_call_with_a_remote_error_naming_it(cloud, how, kind):
    f = cloud.add_pure_function(quits)
    with pytest.raises(RemoteError) as info:
        f.sync_remote(how=how)
    assert isinstance(info.value.__cause__, kind) and info.value.remote_type == kind.__name__
    assert f"how={how!r}" in str(info.value) and kind.__name__ in str(info.value)
    if kind is SystemExit:
        assert info.value.__cause__.code == 3 and "SystemExit(3)" in str(info.value)
    assert cloud.store.get_result(f.address(how=how)) is MISSING


@pytest.mark.parametrize("how, kind", [("exit", SystemExit), ("interrupt", KeyboardInterrupt)])
def test_sync_parallel_fails_that_call_only_and_does_not_retry_it(cloud, how, kind, caplog):
    f = cloud.add_pure_function(quits)
    out = f.sync_parallel([kw_args(how="a"), kw_args(how=how), kw_args(how="b")],
                          return_exceptions=True)
    assert out[0] == "a" and out[2] == "b"
    assert isinstance(out[1], RemoteError) and isinstance(out[1].__cause__, kind)
    assert "attempt" not in caplog.text  # not taken for a worker crash
    with pytest.raises(RemoteError):
        f.sync_parallel([kw_args(how="c"), kw_args(how=how)])
    assert f.sync_parallel([kw_args(how="c")]) == ["c"]


@pytest.mark.timeout(60)
def test_a_call_that_calls_itself_with_the_same_arguments_raises_recursion_error(cloud):
    """It waited for its own lease for ever; plain Python raises RecursionError."""
    @cloud.add_pure_function
    def loop(*, x):
        return loop(x=x)

    @cloud.add_pure_function
    def ping(*, x):
        return pong(x=x)

    @cloud.add_pure_function
    def pong(*, x):
        return ping(x=x)

    with pytest.raises(RecursionError):
        loop(x=1)
    with pytest.raises(RecursionError):
        ping(x=1)
    assert loop.lookup(x=1) is None and ping.lookup(x=1) is None


def test_a_functions_record_is_made_once_when_threads_call_it_at_once(cloud, monkeypatch):
    # Twelve threads' first calls each pickled the function and the user modules it reaches
    # (a second of CPU): one makes the record, the others wait for it
    made, original = [], function_module.function_record

    def slow_record(fn, identity):
        made.append(threading.get_ident())
        time.sleep(0.2)  # long enough for every other thread to ask meanwhile
        return original(fn, identity)

    monkeypatch.setattr(function_module, "function_record", slow_record)

    @cloud.add_pure_function
    def triple(*, x):
        return 3 * x

    identity = triple.identity()
    start, records = threading.Barrier(8), []

    def ask() -> None:
        start.wait(10)
        records.append(triple.record(identity))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(made) == 1 and len(records) == 8
    assert all(record is records[0] for record in records)
