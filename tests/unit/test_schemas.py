"""service.schemas: the strict-numbers shortcut of check_features decides exactly as the
full check does, for everything orjson can hand it."""

from __future__ import annotations

import orjson
import pytest
from pydantic_core import PydanticCustomError

from service.http.schemas import ValidationContext, check_features, load_json, validate_learn

CASES = [
    {"amount": 1.5, "mcc": "5411", "x": None, "flag": True, "n": -7},
    {},
    {"big": 18446744073709551615, "tiny": 5e-324, "max": 1.7976931348623157e308},
    {"nested": {"a": 1}},
    {"items": [1, 2]},
    {"": 1.0},
    {"ok": 1, "": "x"},
    {f"k{i}": float(i) for i in range(11)},  # over max_features=10
    {"deep": [{"a": [1]}]},
]


def _outcome(features: dict, strict: bool) -> str | None:
    try:
        check_features(features, 10, strict_numbers=strict)
    except PydanticCustomError as exc:
        return f"{exc.context}: {exc}"
    return None


@pytest.mark.parametrize("features", CASES)
def test_strict_numbers_shortcut_decides_like_the_full_check(features: dict) -> None:
    parsed, strict = load_json(orjson.dumps({"features": features}))
    assert strict  # orjson parsed it: the shortcut applies
    assert _outcome(parsed["features"], True) == _outcome(parsed["features"], False)


def test_numbers_orjson_refuses_take_the_full_check_and_are_named() -> None:
    ctx = ValidationContext(["legit", "fraud"], max_features=10, max_events=10)
    for text, reason in ((b"NaN", "NaN"), (b"1e400", "infinity"), (b"1" + b"0" * 400, "large")):
        data, strict = load_json(b'{"features": {"amount": ' + text + b'}, "label": 0}')
        assert not strict
        with pytest.raises(Exception, match=rf"features\.amount.*{reason}"):
            validate_learn(data, ctx, strict)
