"""Frames, requests and replies between the pool and its workers (cohort.bridge._wire)."""

from __future__ import annotations

import pickle
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cohort
from cohort.bridge import _wire


@given(st.lists(st.binary(max_size=300), max_size=10), st.integers(1, 50))
def test_frames_come_out_whole_whatever_the_read_boundaries(
    payloads: list[bytes], step: int
) -> None:
    stream = b"".join(_wire.frame(p) for p in payloads)
    reader = _wire.FrameReader()
    got: list[bytes] = []
    for i in range(0, len(stream), step):
        got += reader.feed(stream[i : i + step])
    assert [pickle.loads(g) for g in got] == payloads


def test_a_remote_failure_is_rebuilt_with_its_type_and_traceback() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        failure = _wire.RemoteFailure.capture(exc)
    rebuilt = failure.rebuild()
    assert isinstance(rebuilt, KeyError)
    assert any("Remote traceback" in note for note in rebuilt.__notes__)


def test_an_exception_that_cannot_travel_becomes_a_remote_error() -> None:
    class Local(Exception):
        pass

    failure = _wire.RemoteFailure.capture(Local("here only"))
    rebuilt = failure.rebuild()
    assert isinstance(rebuilt, cohort.RemoteError)
    assert "here only" in str(rebuilt)


def test_an_unpicklable_argument_is_named_in_the_error() -> None:
    with pytest.raises(cohort.SerializationError, match=r"argument 0 \(lock\)"):
        _wire.dumps_request(_wire.CALL, abs, (threading.Lock(),))


def test_a_reply_that_cannot_be_unpickled_is_a_serialization_error() -> None:
    kind, value = _wire.loads_reply(b"not a pickle", abs)
    assert kind == _wire.FAIL
    assert isinstance(value, cohort.SerializationError)


def test_a_lambda_is_refused_after_a_plain_function_was_accepted() -> None:
    """Accepting a function is remembered; refusing anything else is not affected."""
    _wire.check_callable(pickle.dumps)
    _wire.check_callable(test_a_lambda_is_refused_after_a_plain_function_was_accepted)
    _wire.check_callable(test_a_lambda_is_refused_after_a_plain_function_was_accepted)
    with pytest.raises(cohort.SerializationError, match="lambda"):
        _wire.check_callable(lambda: None)
    with pytest.raises(cohort.SerializationError, match="lambda"):
        _wire.check_callable(lambda: None)


def test_one_whole_frame_and_then_pieces() -> None:
    reader = _wire.FrameReader()
    one, two = _wire.frame("one"), _wire.frame("two")
    assert [pickle.loads(m) for m in reader.feed(one)] == ["one"]
    assert reader.feed(two[:3]) == []
    assert [pickle.loads(m) for m in reader.feed(two[3:] + one)] == ["two", "one"]
