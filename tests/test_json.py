"""The one JSON policy (trikernel._json): what is refused, what is converted,
and that every JSON-able value round-trips through ``json.loads(encode(x))``."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trikernel._json import default, encode

UTC = dt.UTC


def test_encode_is_compact_utf8() -> None:
    assert (
        encode({"a": [1, 2.5, None, True], "é": "ü"}) == '{"a":[1,2.5,null,true],"é":"ü"}'.encode()
    )


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(value: float) -> None:
    with pytest.raises(ValueError):
        encode({"x": [value]})


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(TypeError, match="naive datetime"):
        encode({"t": dt.datetime(2024, 1, 2, 3, 4, 5)})


def test_a_utc_datetime_ends_in_z() -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 600, tzinfo=UTC)
    assert encode(when) == b'"2024-01-02T03:04:05.000600Z"'


def test_an_aware_datetime_keeps_its_offset() -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert encode(when) == b'"2024-01-02T03:04:00+02:00"'


def test_dates_and_times_are_iso_8601() -> None:
    assert encode([dt.date(2024, 2, 29), dt.time(12, 30)]) == b'["2024-02-29","12:30:00"]'


@pytest.mark.parametrize(
    "data", [b"\x89PNG\x00", bytearray(b"\x89PNG\x00"), memoryview(b"\x89PNG\x00")]
)
def test_bytes_are_base64(data: bytes | bytearray | memoryview) -> None:
    assert encode({"image/png": data}) == b'{"image/png":"iVBORwA="}'


def test_a_lone_surrogate_is_escaped_and_round_trips() -> None:
    text = "a\ud800b é"
    packed = encode({"text": text})
    assert packed == b'{"text":"a\\ud800b \\u00e9"}'
    assert json.loads(packed) == {"text": text}


def test_other_objects_are_a_type_error_naming_the_type() -> None:
    with pytest.raises(TypeError, match="set object"):
        encode({"x": {1, 2}})
    with pytest.raises(TypeError, match="complex"):
        default(1j)


def test_numpy_scalars_are_their_python_value() -> None:
    import numpy as np  # matplotlib (test extra) requires it

    values = [np.int64(3), np.float32(0.5), np.float64(1.25), np.bool_(True), np.uint8(255)]
    assert encode(values) == b"[3,0.5,1.25,true,255]"


def test_a_numpy_nan_is_refused() -> None:
    import numpy as np  # matplotlib (test extra) requires it

    for nan in (np.float64("nan"), np.float32("nan")):
        with pytest.raises(ValueError):
            encode(nan)


def test_a_numpy_naive_datetime_is_refused() -> None:
    import numpy as np  # matplotlib (test extra) requires it

    with pytest.raises(TypeError, match="naive datetime"):
        encode(np.datetime64("2024-01-02T03:04:05", "us"))


any_text = st.text(st.characters(exclude_categories=()))  # surrogates included
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda inner: st.lists(inner) | st.dictionaries(any_text, inner),
    max_leaves=30,
)


@given(json_values)
def test_every_json_value_round_trips(value: Any) -> None:
    packed = encode(value)
    packed.decode("utf-8")  # always valid UTF-8
    assert json.loads(packed) == value
