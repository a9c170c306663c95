"""pandas (and numpy) value addresses: everything a function can observe is part of the address;
how pandas happens to lay the data out is not. And values that hold themselves (or are too deep)
are a clear SerializationError."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pythagoras_p2p.errors import SerializationError
from pythagoras_p2p.identity.encoding import checked_address, value_address


def addr(value) -> str:
    return value_address(value).hex()


def distinct(*values) -> bool:
    return len({addr(v) for v in values}) == len(values)


def same(*values) -> bool:
    return len({addr(v) for v in values}) == 1


try:
    import pyarrow  # noqa: F401

    HAVE_PYARROW = True
except ImportError:
    HAVE_PYARROW = False


# --------------------------------------------------------------------------- dtypes


def test_nullable_integer_width_is_part_of_the_address():
    small = pd.Series([1, 2], dtype="Int8")
    wide = pd.Series([1, 2], dtype="Int64")
    assert (small * 100).tolist() != (wide * 100).tolist()  # a function sees the difference
    assert distinct(small, wide)


@pytest.mark.parametrize(
    "left, right",
    [
        ("Int8", "Int64"),
        ("Int64", "UInt64"),
        ("Float32", "Float64"),
        ("Int64", "Float64"),
        ("Int64", "int64"),
        ("Float64", "float64"),
    ],
)
def test_numeric_dtypes_are_part_of_the_address(left, right):
    assert distinct(pd.Series([1, 2], dtype=left), pd.Series([1, 2], dtype=right))
    frames = [pd.DataFrame({"a": [1, 2]}, dtype=dtype) for dtype in (left, right)]
    assert distinct(*frames)


def test_boolean_vs_object_vs_bool():
    values = [True, False]
    assert distinct(
        pd.Series(values, dtype="boolean"), pd.Series(values, dtype=object), pd.Series(values)
    )


def test_string_storage_and_missing_value_kind_are_part_of_the_address():
    values = ["a", "b"]
    variants = [
        pd.Series(values, dtype=object),
        pd.Series(values, dtype=pd.StringDtype("python")),
        pd.Series(values, dtype=pd.StringDtype("python", na_value=np.nan)),
    ]
    if HAVE_PYARROW:
        variants.append(pd.Series(values, dtype=pd.StringDtype("pyarrow")))
    assert distinct(*variants)
    assert distinct(*(pd.Index(v) for v in variants))


def test_multiindex_level_dtypes_are_part_of_the_address():
    def make(dtype):
        return pd.MultiIndex.from_arrays(
            [pd.Index(["a", "b"]), pd.Index([1, 2], dtype=dtype)], names=["k", "n"]
        )

    assert distinct(make("int64"), make("Int8"), make("int8"))
    frame = pd.DataFrame({"v": [1.0, 2.0]})
    assert distinct(frame.set_axis(make("int64")), frame.set_axis(make("Int8")))


def test_multiindex_levels_and_codes_count():
    full = pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["k", "n"])
    sliced = full[:2]  # keeps the unused level value "b": .levels, groupby and unstack show it
    rebuilt = pd.MultiIndex.from_tuples([("a", 1), ("a", 2)], names=["k", "n"])
    assert sliced.levels[0].tolist() != rebuilt.levels[0].tolist()
    assert sliced.equals(rebuilt)
    assert distinct(sliced, rebuilt)
    assert same(sliced.remove_unused_levels(), rebuilt)
    assert same(full, pd.MultiIndex.from_tuples(list(full), names=["k", "n"]))
    frame = pd.DataFrame({"v": [1.0, 2.0]}, index=sliced)
    assert distinct(frame, pd.DataFrame({"v": [1.0, 2.0]}, index=rebuilt))


def test_categorical_categories_their_dtype_and_order_are_part_of_the_address():
    values = ["a", "b", "a"]
    assert distinct(
        pd.Series(pd.Categorical(values)),
        pd.Series(pd.Categorical(values, categories=["a", "b", "c"])),
        pd.Series(pd.Categorical(values, categories=["b", "a"])),
        pd.Series(pd.Categorical(values, ordered=True)),
        pd.Series(values),
    )
    numbers = pd.Series(pd.Categorical([1, 2]))
    assert distinct(numbers, numbers.cat.set_categories(pd.Index([1, 2], dtype="int8")))
    assert same(pd.Series(values, dtype="category"), pd.Series(values).astype("category"))


def test_datetime_unit_and_timezone_are_part_of_the_address():
    naive = pd.Series(pd.to_datetime(["2020-01-01", "2020-01-02"]))
    utc = naive.dt.tz_localize("UTC")
    assert distinct(
        naive.astype("datetime64[ns]"),
        naive.astype("datetime64[us]"),
        naive.astype("datetime64[s]"),
        utc.astype("datetime64[ns, UTC]"),
        utc.astype("datetime64[us, UTC]"),
        utc.dt.tz_convert("Europe/Berlin"),  # the same instants
        utc.dt.tz_convert("America/New_York"),
    )
    assert same(utc, pd.Series(pd.to_datetime(["2020-01-01", "2020-01-02"], utc=True)))


def test_period_interval_and_sparse_dtypes_are_part_of_the_address():
    days = pd.Series(pd.period_range("2020-01-01", periods=3, freq="D"))
    assert distinct(days, days.dt.asfreq("M"), days.astype(object))
    intervals = [pd.Interval(0, 1), pd.Interval(1, 2)]
    right = pd.Series(pd.arrays.IntervalArray(intervals, closed="right"))
    left = pd.Series(pd.arrays.IntervalArray.from_breaks([0, 1, 2], closed="left"))
    as_float = pd.Series(pd.arrays.IntervalArray.from_breaks([0.0, 1.0, 2.0]))
    assert distinct(right, left, as_float)
    dense = pd.Series([0.0, 1.0, 0.0])
    assert distinct(
        dense,
        dense.astype(pd.SparseDtype("float64", 0.0)),
        dense.astype(pd.SparseDtype("float64", np.nan)),
        dense.astype(pd.SparseDtype("float32", 0.0)),
    )


def test_datetime_index_frequency_is_part_of_the_address():
    with_freq = pd.date_range("2020-01-01", periods=3, freq="D")
    without = pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2020-01-03"])
    assert with_freq.equals(without) and without.freq is None
    assert distinct(with_freq, without, pd.date_range("2020-01-01", periods=3, freq="D", unit="s"))
    assert same(with_freq, pd.DatetimeIndex(without, freq="D"))


def test_pandas_dtypes_and_frequencies_are_encoded_without_pickle():
    # a part encoded by its pickle cannot be checked again from the value alone
    frame = pd.DataFrame(
        {
            "i": pd.array([1, None, 3], dtype="Int8"),
            "c": pd.Categorical(["a", "b", None]),
            "t": pd.date_range("2020-01-01", periods=3, tz="Europe/Berlin"),
            "p": pd.period_range("2020-01", periods=3, freq="M"),
            "v": pd.arrays.IntervalArray.from_breaks([0, 1, 2, 3], closed="left"),
            "z": pd.Series([0.0, 1.0, 0.0]).astype(pd.SparseDtype("float64", 0.0)),
            "s": pd.array(["x", None, "z"], dtype="string"),
        },
        index=pd.bdate_range("2020-01-01", periods=3),
    )
    assert checked_address(frame) == (value_address(frame), True)


# --------------------------------------------------------------------------- labels and metadata


def test_column_and_index_names_and_their_types():
    assert distinct(pd.DataFrame({1: [1]}), pd.DataFrame({"1": [1]}), pd.DataFrame({1.0: [1]}))
    base = pd.DataFrame({"a": [1, 2]})
    assert distinct(
        base,
        base.rename_axis("row"),
        base.rename_axis(1),
        base.rename_axis("1"),
        base.rename_axis(columns="col"),
    )
    series = pd.Series([1, 2])
    assert distinct(series, series.rename(1), series.rename("1"), series.rename(1.0))


def test_a_range_index_and_the_equal_int64_index_have_addresses_of_their_own():
    # A function can tell them apart (type(x.index), repr, .step): it counts, although pandas
    # turns one into the other in ordinary operations (concat, reset_index, read_csv).
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    materialized = frame.set_axis(pd.Index([0, 1, 2], dtype="int64"))
    assert type(frame.index) is not type(materialized.index)
    assert distinct(frame, materialized)
    assert distinct(pd.Series([1, 2]), pd.Series([1, 2], index=pd.Index([0, 1])))
    assert same(frame, pd.DataFrame({"a": [1.0, 2.0, 3.0]}, index=pd.RangeIndex(3)))
    assert distinct(frame, frame.set_axis(pd.Index([0, 1, 2], dtype="int32")))


def test_attrs_and_flags_are_part_of_the_address():
    frame = pd.DataFrame({"a": [1, 2]})
    tagged = frame.copy()
    tagged.attrs["unit"] = "m"
    other = frame.copy()
    other.attrs["unit"] = "s"
    strict = frame.set_flags(allows_duplicate_labels=False)
    assert distinct(frame, tagged, other, strict)
    series = frame["a"]
    assert distinct(series, series.set_flags(allows_duplicate_labels=False))
    again = frame.copy()
    again.attrs["unit"] = "m"
    assert same(tagged, again)


# --------------------------------------------------------------------------- missing values


def test_missing_value_kinds_in_object_columns_stay_distinct():
    assert distinct(
        pd.Series(["x", np.nan], dtype=object),
        pd.Series(["x", None], dtype=object),
        pd.Series(["x", pd.NA], dtype=object),
        pd.Series(["x", pd.NaT], dtype=object),
    )


def test_values_under_the_mask_do_not_matter():
    a = pd.array([1, 2, 3], dtype="Int64")
    b = pd.array([1, 99, 3], dtype="Int64")
    a[1] = pd.NA
    b[1] = pd.NA
    assert a._data[1] != b._data[1]  # different leftovers under the mask
    assert same(pd.Series(a), pd.Series(b), pd.Series([1, None, 3], dtype="Int64"))
    assert distinct(pd.Series(a), pd.Series([1, 0, 3], dtype="Int64"))
    flags = pd.array([True, True], dtype="boolean")
    flags[0] = pd.NA
    assert same(pd.Series(flags), pd.Series([None, True], dtype="boolean"))


def test_nullable_columns_hash_their_buffers():
    big = pd.Series(np.arange(200_000), dtype="Int64")
    big[5] = pd.NA
    other = big.copy()
    other[7] = 0
    assert distinct(big, other)
    assert same(big, big.copy())


# --------------------------------------------------------------------------- layout


def test_equal_frames_with_extension_columns_built_differently_share_an_address():
    def by_dict():
        return pd.DataFrame(
            {
                "i": pd.array([1, None], dtype="Int8"),
                "c": pd.Categorical(["x", "y"]),
                "t": pd.to_datetime(["2020-01-01", None]).tz_localize("UTC"),
                "s": pd.array(["p", None], dtype="string"),
            }
        )

    one = by_dict()
    piecewise = pd.DataFrame({"i": [1, None]}).astype({"i": "Int8"})
    piecewise["c"] = pd.Series(["x", "y"]).astype("category")
    piecewise["t"] = pd.Series(pd.to_datetime(["2020-01-01", None], utc=True))
    piecewise["s"] = pd.Series(["p", None], dtype="string")
    records = pd.DataFrame.from_records([(1, "x"), (None, "y")], columns=["i", "c"])
    records = records.astype({"i": "Int8", "c": "category"})
    records["t"] = one["t"].copy()
    records["s"] = one["s"].copy()
    for frame in (piecewise, records):
        pd.testing.assert_frame_equal(frame, one)
    assert same(one, by_dict(), one.copy(), piecewise, records)


def test_non_contiguous_columns_share_an_address():
    values = np.arange(40, dtype=np.int32).reshape(10, 4)
    from_view = pd.DataFrame(values[::2, ::2], columns=["a", "b"])
    from_copy = pd.DataFrame({"a": values[::2, 0].copy(), "b": values[::2, 2].copy()})
    assert same(from_view, from_copy)


# --------------------------------------------------------------------------- other pandas objects


def test_bare_pandas_objects_differ_by_dtype():
    assert distinct(pd.array([1, 2], dtype="Int8"), pd.array([1, 2], dtype="Int64"))
    assert distinct(pd.Categorical(["a", "b"]), pd.Categorical(["a", "b"], ordered=True))
    assert distinct(pd.Categorical(["a", "b"]), pd.Categorical(["a", "b"], categories=list("abc")))
    stamp = pd.Timestamp("2020-01-01")
    assert distinct(stamp.as_unit("s"), stamp.as_unit("ns"), stamp.tz_localize("UTC"))
    assert distinct(pd.Period("2020-01", "M"), pd.Period("2020-01-01", "D"))
    assert distinct(pd.Interval(0, 1), pd.Interval(0, 1, closed="left"))


# --------------------------------------------------------------------------- numpy


def test_numpy_zero_dim_and_memory_layout():
    assert same(np.array(5), np.array(5).copy(), np.arange(6)[5:].reshape(()))
    assert distinct(np.array(5), np.array(5, dtype=np.int32), np.array([5]))
    c = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert same(c, c.copy(), c[:, ::1])
    assert same(np.asfortranarray(c), c.T.copy().T)
    assert distinct(c, np.asfortranarray(c), c[:, ::2], c[::-1])


def test_numpy_datetime_unit_and_object_arrays():
    days = np.array(["2020-01-01"], dtype="datetime64[D]")
    assert distinct(days, days.astype("datetime64[s]"), days.astype("datetime64[ns]"))
    ints = np.array([1, 2], dtype=np.int64)
    assert distinct(ints, ints.astype(object), ints.astype(">i8"))
# --------------------------------------------------------------------------- cycles and depth


def test_a_list_that_contains_itself_is_a_clear_error():
    a: list = [1]
    a.append(a)
    with pytest.raises(SerializationError, match="contains itself"):
        value_address(a)
    with pytest.raises(SerializationError, match="without cycles"):
        value_address({"x": [a]})


def test_a_dict_that_contains_itself_is_a_clear_error():
    d: dict = {}
    d["k"] = d
    with pytest.raises(SerializationError, match="contains itself"):
        value_address(d)
    inner: list = []
    through_tuple = {"t": (inner,)}
    inner.append(through_tuple)
    with pytest.raises(SerializationError, match="contains itself"):
        value_address(through_tuple)


def test_shared_but_acyclic_containers_are_fine():
    shared = [1, 2]
    assert addr([shared, shared]) == addr([shared, shared])
    assert addr([shared, shared]) != addr([[1, 2], [1, 2]])  # sharing is seen (test_encoding)


def test_deep_but_acyclic_nesting_works_and_too_deep_is_a_clear_error():
    deep: list = []
    for _ in range(200):
        deep = [deep]
    assert len(value_address(deep)) == 32
    too_deep: list = []
    for _ in range(100_000):
        too_deep = [too_deep]
    with pytest.raises(SerializationError, match="nested too deeply"):
        value_address(too_deep)
