"""Small numpy arrays travel in a compact form that rebuilds exactly what numpy's pickle does."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import _bridge_funcs as f
from _bridge_util import checked_pool
from cohort.bridge import _shm

PLAIN_DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="="),
    hnp.integer_dtypes(endianness="<"),
    hnp.integer_dtypes(endianness=">"),
    hnp.unsigned_integer_dtypes(endianness="<"),
    hnp.unsigned_integer_dtypes(endianness=">"),
    hnp.floating_dtypes(endianness="<", sizes=(16, 32, 64)),
    hnp.floating_dtypes(endianness=">", sizes=(16, 32, 64)),
    hnp.complex_number_dtypes(endianness="<"),
    hnp.complex_number_dtypes(endianness=">"),
    st.sampled_from([np.dtype(np.longdouble), np.dtype(np.clongdouble)]),
)


def _layout(a: Any, how: str) -> Any:
    if how == "F":
        return np.asfortranarray(a)
    if how == "strided" and a.ndim:
        return a[..., ::2]
    if how == "transposed":
        return a.T
    return a


def same_array(got: Any, sent: Any) -> None:
    """Everything a receiver can observe is what was sent: type, dtype (byte order
    too), shape, values bit for bit; and the layout and writability are those numpy's
    own pickle gives (C or Fortran order kept, other layouts C-contiguous; a read-only
    contiguous array stays read-only, a copy of another layout is writable)."""
    want = pickle.loads(pickle.dumps(sent, pickle.HIGHEST_PROTOCOL))
    assert type(got) is type(sent)
    assert got.dtype == sent.dtype
    assert got.dtype.str == sent.dtype.str
    assert got.shape == sent.shape
    assert got.tobytes() == sent.tobytes()
    assert got.strides == want.strides
    assert got.flags.c_contiguous == want.flags.c_contiguous
    assert got.flags.f_contiguous == want.flags.f_contiguous
    assert got.flags.writeable == want.flags.writeable


@settings(max_examples=300, deadline=None)
@given(
    hnp.arrays(PLAIN_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)),
    st.sampled_from(["C", "F", "strided", "transposed"]),
    st.booleans(),
)
def test_a_compact_array_rebuilds_the_array_sent(a: Any, how: str, writeable: bool) -> None:
    a = _layout(a, how)
    a.flags.writeable = writeable
    stand_in = _shm.compact(a)
    assert stand_in is not a  # it took the compact form
    got = pickle.loads(pickle.dumps(stand_in, pickle.HIGHEST_PROTOCOL))
    same_array(got, a)
    if got.flags.writeable:
        before = a.tobytes()
        got[...] = 1  # its own memory: the sender's array is untouched
        assert a.tobytes() == before


class _Sub(np.ndarray):
    pass


@pytest.mark.parametrize(
    "a",
    [
        np.array([1, "x", None], dtype=object),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.array([1, 2], dtype=np.timedelta64),
        np.array(["ab", "c"]),
        np.zeros(2, dtype=[("x", "<i4"), ("y", "<f8")]),
        np.zeros(2, dtype=np.dtype(np.float64, metadata={"unit": "m"})),
        np.zeros(3).view(_Sub),
        np.ma.masked_array([1, 2, 3], mask=[False, True, False]),
    ],
    ids=["object", "datetime", "timedelta", "str", "structured", "metadata", "subclass", "masked"],
)
def test_arrays_a_compact_form_cannot_describe_take_numpys_own_pickle(a: Any) -> None:
    assert _shm.compact(a) is a
    assert _shm.compact_all((1, a))[1] is a


def test_values_other_than_arrays_are_left_as_they_are() -> None:
    args = (1, b"x", "s", None, [np.zeros(2)])
    assert _shm.compact_all(args) is args
    assert _shm.compact(args[4]) is args[4]


@pytest.mark.parametrize("writeable", [True, False])
async def test_small_arrays_cross_a_pool_both_ways_exactly(writeable: bool) -> None:
    arrays = [
        np.arange(12, dtype=">i4").reshape(3, 4),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.arange(10, dtype=np.complex64)[::3],
        np.array(7.5),
        np.zeros((0, 3)),
        np.array([True, False]),
    ]
    async with checked_pool(1) as pool:
        for a in arrays:
            a.flags.writeable = writeable
            same_array(await pool.run(f.echo, a), a)
            a2, b2 = await pool.run(f.echo_two, a, a)  # two arguments, a tuple back
            same_array(a2, a)
            same_array(b2, a)


@pytest.mark.parametrize("nbytes", [4 * _shm.OOB_MIN, 2 * _shm.COPY_MAX])  # copied; mapped
@pytest.mark.parametrize("layout", ["C", "F", ">f8", "read-only", "strided"])
async def test_large_arrays_keep_dtype_shape_order_and_values(nbytes: int, layout: str) -> None:
    """Out of band (through a scratch copy or a segment of their own) as in band: writable
    unless sent read-only, as with numpy's pickle."""
    a = np.arange(nbytes // 8, dtype=">f8" if layout == ">f8" else "<f8").reshape(-1, 8)
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "strided":
        a = a[:, ::2]
    a.flags.writeable = layout != "read-only"
    async with checked_pool(1) as pool:
        for back in [await pool.run(f.echo, a), *await pool.run(f.echo_two, a, a)]:
            assert back.dtype.str == a.dtype.str
            assert back.shape == a.shape
            assert back.tobytes() == a.tobytes()
            assert back.flags.f_contiguous == (layout == "F")
            assert back.flags.writeable == (layout != "read-only")
