"""Resources: parsing what nodes declare and functions ask, GPU detection, and the ledger."""

from __future__ import annotations

import sys
import types

import pytest

from pythagoras_p2p import ConfigurationError, LocalCloud
from pythagoras_p2p.resources import (
    Ledger,
    detect_gpus,
    lacking,
    machine_resources,
    parse_needs,
    parse_spec,
    summary,
)


def test_a_function_asks_with_numbers_and_sizes():
    assert parse_needs({"gpus": 1, "memory": "8G", "license": 0.5}) == (
        ("gpus", 1.0), ("license", 0.5), ("memory", float(8 << 30)))
    assert parse_needs({"memory": 1024, "gpus": 0}) == (("memory", 1024.0),)  # zero asks nothing
    assert parse_needs(None) == ()


@pytest.mark.parametrize("bad, message", [
    ({"gpus": -1}, "amount is a number of 0 or more"),
    ({"gpus": 0.5}, "whole numbers"),
    ({"memory": "lots"}, "not a size"),
    ({"gpus": True}, "give a number"),
    ({"": 1}, "not a resource name"),
    ({"a b": 1}, "not a resource name"),
    ([("gpus", 1)], "takes a dict"),
    ({"license": float("inf")}, "0 or more"),
])
def test_bad_requests_are_clear_errors(bad, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_needs(bad)


def test_a_node_declares_custom_resources():
    assert parse_spec("gpus=1,license=2") == {"gpus": 1.0, "license": 2.0}
    assert parse_spec(" gpus=1  license=2 ") == {"gpus": 1.0, "license": 2.0}
    assert parse_spec("memory=16G") == {"memory": float(16 << 30)}
    assert parse_spec("") == {}


@pytest.mark.parametrize("bad, message", [
    ("disk=-1", "0 or more"), ("=3", "write name=amount"), ("a=b", "not a number"),
    ("gpu", "write name=amount"), ("gpu=", "write name=amount"),
    ("gpu=1", "did you mean 'gpus'"), ("mem=8G", "did you mean 'memory'"),
])
def test_bad_declarations_are_clear_errors(bad, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_spec(bad)


def test_gpus_are_counted_through_nvidia_ml_py(monkeypatch):
    calls = []
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: calls.append("init")
    fake.nvmlDeviceGetCount = lambda: 2
    fake.nvmlShutdown = lambda: calls.append("shutdown")
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert detect_gpus() == 2 and calls == ["init", "shutdown"]
    assert machine_resources(3)["gpus"] == 2 and machine_resources(3)["cpus"] == 3

    def no_driver():
        raise RuntimeError("NVML Shared Library Not Found")

    fake.nvmlInit = no_driver
    assert detect_gpus() == 0
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    assert detect_gpus() == 0


def test_custom_resources_may_set_standard_ones():
    found = machine_resources(2, {"gpus": 4, "license": 1})
    assert found["gpus"] == 4 and found["license"] == 1 and found["memory"] > 0


def test_the_ledger_holds_what_running_calls_take():
    ledger = Ledger({"cpus": 4, "gpus": 2, "memory": 100, "license": 1})
    first = ledger.take((("gpus", 1), ("memory", 60)))
    assert first == (0,)
    assert ledger.take((("memory", 60),)) is None  # 60 + 60 > 100
    second = ledger.take((("gpus", 1),))
    assert second == (1,)
    assert ledger.take((("gpus", 1),)) is None
    ledger.give((("gpus", 1), ("memory", 60)), first)
    assert ledger.take((("gpus", 1), ("memory", 60))) == (0,)
    assert ledger.could_ever((("gpus", 3),)) == ["gpus: 3 asked, 2 there"]
    assert not ledger.could_ever((("license", 1),))
    # cpus: a busy worker holds one; a call asking for 3 needs 3 of the 4 free
    assert ledger.take((("cpus", 3),), busy_workers=2) is None
    assert ledger.take((("cpus", 3),), busy_workers=1) == ()
    assert ledger.in_use(busy_workers=1)["cpus"] == 3


def test_lacking_and_summary_name_what_is_missing():
    assert lacking((("gpus", 1), ("memory", float(8 << 30))), {"gpus": 0, "memory": float(4 << 30)}) == [
        "gpus: 1 asked, 0 there", "memory: 8G asked, 4G there"]
    assert summary({"cpus": 2, "memory": float(16 << 30), "gpus": 1}) == "cpus=2,gpus=1,memory=16G"


def test_decoration_checks_resources_and_requires(tmp_path):
    cloud = LocalCloud(home=tmp_path / "home", workers=1)
    try:
        @cloud.add_pure_function(resources={"gpus": 1, "memory": "1G"}, requires="packaging")
        def f(*, x):
            return x

        assert f.needs == (("gpus", 1.0), ("memory", float(1 << 30)))
        assert f.requires == ("packaging",)

        @cloud.add_pure_function
        def g(*, x):
            return x

        assert g.needs == () and g.requires == ()
        with pytest.raises(ConfigurationError, match="gpus=-1"):
            cloud.add_pure_function(resources={"gpus": -1})
        from pythagoras_p2p import RequirementsError

        with pytest.raises(RequirementsError, match="nosuchpackage"):
            @cloud.add_pure_function(requires="nosuchpackage>=1")
            def h(*, x):
                return x
        # resources never enter a call's address
        assert f.address(x=1) != g.address(x=1)  # (different functions)

        @cloud.add_pure_function(resources={"license": 1})
        def g2(*, x):
            return x

        def plain(*, x):
            return x

        assert cloud.add_pure_function(plain).address(x=1) == \
            cloud.add_pure_function(resources={"gpus": 2})(plain).address(x=1)
    finally:
        cloud.close()


def test_the_mdns_record_carries_a_summary_of_the_resources():
    from pythagoras_p2p.net.mdns import Advert

    advert = Advert("n1", ("10.0.0.1",), 7575, "tag", 1, "3.11", 2,
                    summary({"cpus": 2, "gpus": 1, "memory": float(16 << 30), "license": 2}))
    assert advert.properties()["res"] == "cpus=2,gpus=1,license=2,memory=16G"
    assert "res" not in Advert("n1", ("10.0.0.1",), 7575, "tag", 1, "3.11", 2).properties()


def test_a_malformed_resources_variable_is_an_error_when_the_cloud_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHAGORAS_RESOURCES", "gpu=-1")
    with pytest.raises(ConfigurationError, match="PYTHAGORAS_RESOURCES 'gpu=-1'"):
        LocalCloud(home=tmp_path / "home", workers=1)


def test_gpu_in_a_function_s_resources_says_gpus():
    with pytest.raises(ConfigurationError, match="did you mean 'gpus'"):
        parse_needs({"gpu": 1})


def test_lacking_names_the_closest_resource_a_machine_has():
    short = lacking(parse_needs({"licence": 1}), {"cpus": 2.0, "license": 1.0})
    assert short == ["licence: 1 asked, 0 there (did you mean 'license'?)"]
    assert lacking(parse_needs({"license": 2}), {"license": 1.0}) == ["license: 2 asked, 1 there"]
