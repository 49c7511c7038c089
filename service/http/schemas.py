"""Request and response shapes of the HTTP contract, and their validation.

Request bodies are parsed with orjson and validated with pydantic `TypeAdapter`s that get the
per-app limits (class names, max features, max events) through the validation context. Every
rejection names the field: ``events[3].features.amount: NaN is not allowed``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.errors import BadRequest

__all__ = [
    "EXAMPLE_TRANSACTION",
    "LearnBatch",
    "LearnEvent",
    "PredictBatch",
    "PredictEvent",
    "ValidationContext",
    "bad_request_from",
    "check_features",
    "format_errors",
    "load_json",
    "parse_scalar",
    "parse_json",
    "query_features",
    "query_flag",
    "validate_learn",
    "validate_predict",
]

EXAMPLE_TRANSACTION: dict[str, Any] = {
    "amount": 912.40,
    "currency": "EUR",
    "mcc": "5732",
    "country": "NL",
    "card_present": False,
    "hour": 3,
    "account_age_days": 12,
    "tx_count_1h": 7,
    "ip_risk": 0.83,
}


class ValidationContext:
    """Per-app limits handed to the validators (built once per app).

    max_name_chars, max_value_chars: longest feature name and string value;
    timestamp_max_age_s, timestamp_max_skew_s: an event timestamp must lie within
    [now - max age, now + max skew] of the server clock.
    """

    def __init__(
        self,
        classes: list[str],
        max_features: int,
        max_events: int,
        *,
        max_name_chars: int = 256,
        max_value_chars: int = 1024,
        timestamp_max_age_s: float = 5 * 365 * 86_400.0,
        timestamp_max_skew_s: float = 300.0,
    ):
        self.classes = list(classes)
        self.class_index = {name: i for i, name in enumerate(classes)}
        self.max_features = max_features
        self.max_events = max_events
        self.max_name_chars = max_name_chars
        self.max_value_chars = max_value_chars
        self.timestamp_max_age_s = timestamp_max_age_s
        self.timestamp_max_skew_s = timestamp_max_skew_s

    def check_features(self, features: Mapping[str, Any], strict_numbers: bool = False) -> None:
        """`check_features` with this app's limits."""
        check_features(
            features,
            self.max_features,
            strict_numbers,
            max_name_chars=self.max_name_chars,
            max_value_chars=self.max_value_chars,
        )


def _strict_numbers(info: ValidationInfo) -> bool:
    context = info.context
    return bool(context and context.get("strict_numbers"))


def _fail(reason: str, key: str | None = None) -> PydanticCustomError:
    ctx = {"reason": reason} if key is None else {"reason": reason, "key": key}
    return PydanticCustomError("invalid", "{reason}", ctx)


def _ctx(info: ValidationInfo) -> ValidationContext:
    context = info.context or {}
    found = context.get("ctx")
    if found is None:
        raise RuntimeError(
            "validation needs a ValidationContext (validate_learn / validate_predict)"
        )
    return found


def check_features(
    features: Mapping[str, Any],
    max_features: int,
    strict_numbers: bool = False,
    *,
    max_name_chars: int = 256,
    max_value_chars: int = 1024,
) -> None:
    """Flat JSON object of numbers, strings, booleans and nulls; raise naming the first bad key.

    Names are at most ``max_name_chars`` characters and string values ``max_value_chars``:
    the featurizer hashes and caches each name and value, so their size is bounded here
    rather than only by the body limit.

    ``strict_numbers``: the numbers come from orjson, which parses no NaN or infinity and no
    integer beyond 64 bits; then a flat object of plain scalars whose names and strings are
    within their limits is accepted in a few C-level passes, and anything else gets the full
    check (and its message).

    >>> check_features({"amount": 1.5, "mcc": "5411", "x": None}, 10)
    >>> check_features({"amount": float("nan")}, 10)
    Traceback (most recent call last):
    pydantic_core._pydantic_core.PydanticCustomError: NaN is not allowed
    >>> check_features({"amount": [1]}, 10, strict_numbers=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    pydantic_core._pydantic_core.PydanticCustomError: nested objects and arrays are not allowed...
    >>> check_features({"note": "x" * 11}, 10, max_value_chars=10)
    Traceback (most recent call last):
    pydantic_core._pydantic_core.PydanticCustomError: string of 11 characters, at most 10 allowed
    """
    if len(features) > max_features:
        raise _fail(f"{len(features)} features, at most {max_features} allowed")
    if (
        strict_numbers
        and _JSON_SCALARS.issuperset(map(type, features.values()))
        and _within_lengths(features, max_name_chars, max_value_chars)
    ):
        if "" in features:
            raise _fail("empty feature name", "")
        return
    for key, value in features.items():
        if len(key) > max_name_chars:
            raise _fail(
                f"feature name of {len(key)} characters, at most {max_name_chars} allowed",
                _shorten(key),
            )
        kind = value.__class__
        if kind is str:
            if len(value) > max_value_chars:
                raise _fail(
                    f"string of {len(value)} characters, at most {max_value_chars} allowed", key
                )
            continue
        if kind is bool or value is None:
            continue
        if kind is int:
            if not -1e300 < value < 1e300:  # arbitrary-size JSON ints must fit a float
                raise _fail("number too large", key)
            continue
        if kind is float:
            if value != value:
                raise _fail("NaN is not allowed", key)
            if value in (math.inf, -math.inf):
                raise _fail("infinity is not allowed", key)
            continue
        if isinstance(value, (dict, list, tuple)):
            raise _fail("nested objects and arrays are not allowed; flatten them", key)
        raise _fail(f"unsupported value type {kind.__name__}", key)
    if "" in features:
        raise _fail("empty feature name", "")


def _within_lengths(features: Mapping[str, Any], max_name: int, max_value: int) -> bool:
    # One plain loop: about 0.65 µs for 9 features, faster here than max(map(len, ...)).
    for key, value in features.items():
        if len(key) > max_name or (value.__class__ is str and len(value) > max_value):
            return False
    return True


def _shorten(text: str, limit: int = 40) -> str:
    """A long name as an error message shows it (the message must stay short).

    >>> _shorten("n" * 100, 8)
    'nnnnnnnn...(100 characters)'
    """
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


FeatureMap = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "description": "flat object: numbers are numeric features, strings categorical; "
            "booleans are 0/1; null means missing. No NaN, infinity or nesting.",
            "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
            "example": EXAMPLE_TRANSACTION,
        }
    ),
]
LabelValue = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}],
            "description": "a configured class name, or its integer index",
            "example": "fraud",
        }
    ),
]
TimestampValue = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number"},
                {"type": "null"},
            ],
            "description": "RFC 3339 (no offset means UTC) or unix seconds",
            "example": "2026-11-27T09:14:03Z",
        }
    ),
]
IdValue = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "maxLength": 256,
            "description": "idempotency key: an event id is learned once",
            "example": "tx-8d1f3",
        }
    ),
]


def _parse_timestamp(value: Any, ctx: ValidationContext | None = None) -> float | None:
    """RFC 3339 text or unix seconds -> unix seconds, within the context's window around the
    server clock (see `ValidationContext`)."""
    if value is None:
        return None
    kind = value.__class__
    if kind is int or kind is float:
        if not math.isfinite(value):
            raise _fail("timestamp must be finite")
        seconds = float(value)
    elif kind is not str:
        raise _fail(f"timestamp must be an RFC 3339 string or unix seconds, got {kind.__name__}")
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _fail(
                f"timestamp {value[:64]!r} is not RFC 3339 (e.g. 2026-11-27T09:14:03Z)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    if ctx is not None:
        check_timestamp_window(seconds, ctx.timestamp_max_age_s, ctx.timestamp_max_skew_s)
    return seconds


def check_timestamp_window(seconds: float, max_age_s: float, max_skew_s: float) -> None:
    """Refuse a timestamp further ahead of the server clock than `max_skew_s`, or older than
    `max_age_s`: with time decay, one event stamped in the future would stop the decay of
    every later one.

    >>> check_timestamp_window(time.time() + 10, 86400, 300)
    >>> check_timestamp_window(time.time() + 3600, 86400, 300)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    pydantic_core._pydantic_core.PydanticCustomError: timestamp is 3600 s ahead of ...
    """
    now = time.time()
    if seconds > now + max_skew_s:
        raise _fail(
            f"timestamp is {seconds - now:.0f} s ahead of the server clock; at most "
            f"{max_skew_s:g} s allowed (STREAMBALANCE_TIMESTAMP_MAX_SKEW_S)"
        )
    if seconds < now - max_age_s:
        raise _fail(
            f"timestamp is {now - seconds:.0f} s in the past; at most {max_age_s:g} s allowed "
            "(STREAMBALANCE_TIMESTAMP_MAX_AGE_S)"
        )


class LearnEvent(BaseModel):
    """One labeled event, or a late label for an earlier prediction (`prediction_id` + `label`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: IdValue = None
    features: FeatureMap | None = None
    label: LabelValue
    timestamp: TimestampValue = None
    prediction_id: Annotated[str | None, Field(max_length=128)] = None

    @field_validator("id", mode="plain")
    @classmethod
    def _check_id(cls, value: Any) -> str | None:
        if value is None:
            return None
        if value.__class__ is int:
            value = str(value)  # the digits are the id (a JSON int of any length)
        if value.__class__ is not str or not value or len(value) > 256:
            raise _fail("id must be a non-empty string (or integer) of at most 256 characters")
        return value

    @field_validator("features")
    @classmethod
    def _check_features(cls, value: dict[str, Any] | None, info: ValidationInfo) -> Any:
        if value is not None:
            _ctx(info).check_features(value, _strict_numbers(info))
        return value

    @field_validator("label", mode="plain")
    @classmethod
    def _check_label(cls, value: Any, info: ValidationInfo) -> int:
        ctx = _ctx(info)
        if value.__class__ is str:
            index = ctx.class_index.get(value)
            if index is None:
                raise _fail(
                    f"unknown label {value[:64]!r}; expected one of {', '.join(ctx.classes)} "
                    f"or an index 0..{len(ctx.classes) - 1}"
                )
            return index
        if value.__class__ is int:
            if not 0 <= value < len(ctx.classes):
                raise _fail(f"label index {value} out of range 0..{len(ctx.classes) - 1}")
            return value
        raise _fail(f"label must be a class name or an integer index, got {type(value).__name__}")

    @field_validator("timestamp", mode="plain")
    @classmethod
    def _check_timestamp(cls, value: Any, info: ValidationInfo) -> float | None:
        return _parse_timestamp(value, _ctx(info))

    @model_validator(mode="after")
    def _features_or_prediction(self) -> LearnEvent:
        if (self.features is None) == (self.prediction_id is None):
            raise _fail("give either features or prediction_id (a late label), not both or neither")
        return self


class LearnBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[LearnEvent]

    @model_validator(mode="before")
    @classmethod
    def _check_size(cls, data: Any, info: ValidationInfo) -> Any:
        _check_events_size(data, _ctx(info).max_events)
        return data


class PredictEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: FeatureMap

    @field_validator("features")
    @classmethod
    def _check_features(cls, value: dict[str, Any], info: ValidationInfo) -> Any:
        _ctx(info).check_features(value, _strict_numbers(info))
        return value


class PredictBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[PredictEvent]

    @model_validator(mode="before")
    @classmethod
    def _check_size(cls, data: Any, info: ValidationInfo) -> Any:
        _check_events_size(data, _ctx(info).max_events)
        return data


def _check_events_size(data: Any, max_events: int) -> None:
    events = data.get("events") if isinstance(data, dict) else None
    if isinstance(events, list):
        if not events:
            raise _fail("empty batch: send at least one event", "events")
        if len(events) > max_events:
            raise _fail(f"{len(events)} events, at most {max_events} per request", "events")


# Responses (documentation only; routes return ORJSONResponse directly).
class LearnResponse(BaseModel):
    accepted: int = Field(description="new events appended to the stream")
    duplicates: int = Field(description="events whose id was already seen (dropped)")
    model_version: int | None = Field(None, description="only with wait=true")


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]
    prediction_id: str
    model_version: int


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class DriftSignal(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    detector: str
    state: str
    value: float | None
    detections: int
    last_detection_at: float | None


class DriftResponse(BaseModel):
    drift_detected: bool
    signals: list[DriftSignal]


class FieldError(BaseModel):
    field: str = Field(description="where: `events[3].features.amount`, `body`, `X-API-Key`")
    message: str


class ErrorResponse(BaseModel):
    """The body of every error the service answers (4xx and 5xx)."""

    model_config = ConfigDict(extra="allow")
    detail: str = Field(description="`<field>: <problem>`, e.g. `events[1].label: unknown label`")
    errors: list[FieldError] | None = Field(
        None, description="422 for an invalid body: every problem found (at most 20)"
    )
    cause: str | None = Field(
        None,
        description="503/500 from Redis: unreachable, timeout, out_of_memory, read_only, "
        "cluster_redirect, cluster_down, try_again, loading or error",
    )


# Objects that grow with the service (new metrics, new fields): documented, open to more.
_OPEN = ConfigDict(extra="allow")


class StateResponse(BaseModel):
    model_config = _OPEN
    model: str = Field(description="model name (the hash tag of its Redis keys)")
    model_version: int = Field(description="learner updates applied to the served model")
    checkpoint_version: int
    checkpoint_time: float | None = Field(description="unix time of the last checkpoint")
    strategy: str = Field(description="the loss strategy that serves")
    network: str
    role: str
    classes: list[str]
    events_learned: int
    class_frequencies: dict[str, float] = Field(description="EMA class frequencies p_c")
    factors: dict[str, float] = Field(description="smoothed rescaling factors w_c")
    counts: dict[str, int] = Field(description="labels learned per class")
    steps: int
    skipped_steps: int
    clipped_steps: int
    stream_lag: int | None = Field(description="events accepted, not applied yet")
    prequential: dict[str, Any] = Field(description="rolling test-then-train metrics")
    production: dict[str, Any] | None = Field(
        description="served predictions scored by their late labels"
    )


class ModelSummary(BaseModel):
    model_config = _OPEN
    name: str
    strategy: str
    role: str = Field(description="`champion` or `shadow`")
    events_learned: int
    prequential: dict[str, Any]


class ModelsResponse(BaseModel):
    model_config = _OPEN
    champion: ModelSummary
    shadows: list[ModelSummary]
    versions: list[dict[str, Any]] = Field(description="kept checkpoints, newest first")
    operations: list[dict[str, Any]] = Field(description="recent promotions and rollbacks")


class OperationResponse(BaseModel):
    """A promotion or rollback, as recorded in the operations log."""

    model_config = _OPEN
    action: str = Field(description="`promotion` or `rollback`")
    checkpoint_version: int
    model_version: int
    time: float


class HistoryResponse(BaseModel):
    model_config = _OPEN
    interval_s: float
    classes: list[str]
    samples: list[dict[str, Any]]


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    model_config = _OPEN
    status: str
    model_version: int


def _path(loc: tuple[Any, ...]) -> str:
    """('events', 3, 'features') -> 'events[3].features'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def format_errors(
    errors: Iterable[Mapping[str, Any]], prefix: tuple[Any, ...] = ()
) -> list[dict[str, str]]:
    """Pydantic errors -> [{"field": "events[3].features.amount", "message": "NaN is not allowed"}].

    Feature checks report the offending feature name in `ctx["key"]` so it lands in the path.

    >>> format_errors([{"loc": ("events", 3, "label"), "msg": "Value error, unknown label 'x'"}])
    [{'field': 'events[3].label', 'message': "unknown label 'x'"}]
    """
    out = []
    for err in errors:
        loc = prefix + tuple(err.get("loc", ()))
        ctx = err.get("ctx") or {}
        if "key" in ctx:
            loc = loc + (str(ctx["key"]),)
        message = ctx.get("reason") or str(err.get("msg", "invalid"))
        out.append(
            {"field": _path(loc) or "body", "message": message.removeprefix("Value error, ")}
        )
    return out


def bad_request_from(
    errors: Iterable[Mapping[str, Any]], prefix: tuple[Any, ...] = ()
) -> BadRequest:
    formatted = format_errors(errors, prefix)[:20]
    first = formatted[0] if formatted else {"field": "body", "message": "invalid request"}
    return BadRequest(f"{first['field']}: {first['message']}", errors=formatted)


_LEARN_EVENT = TypeAdapter(LearnEvent)
_LEARN_BATCH = TypeAdapter(LearnBatch)
_PREDICT_BATCH = TypeAdapter(PredictBatch)


def parse_json(body: bytes) -> Any:
    """The body's JSON (``load_json`` without the parser's word on numbers)."""
    return load_json(body)[0]


def load_json(body: bytes) -> tuple[Any, bool]:
    """(data, strict_numbers): orjson first, then the stdlib parser only to locate
    NaN/Infinity, huge numbers or lone surrogates that orjson refuses outright.
    ``strict_numbers`` is True when orjson parsed the body: every float is then finite, every
    int fits 64 bits and every string is valid Unicode.

    >>> load_json(b'{"a": 1.5}'), load_json(b'{"a": NaN}')[1]
    (({'a': 1.5}, True), False)
    >>> load_json(rb'{"events": [{"id": "\\ud800"}]}')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    service.errors.BadRequest: events[0].id: a lone UTF-16 surrogate (\\ud800) is not text...
    """
    try:
        return orjson.loads(body), True
    except orjson.JSONDecodeError as exc:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadRequest(f"body: invalid JSON ({exc})") from None
    # The stdlib parser turns a `\ud800` escape into a lone surrogate: a string that cannot be
    # encoded (for Redis, the feature hash, the response). Refused here, named by its path.
    found = _find_surrogate(data)
    if found is not None:
        field = _path(found[0]) or "body"
        message = (
            f"a lone UTF-16 surrogate ({_escaped(found[1])}) is not text; "
            "a character outside the BMP is sent as a surrogate pair"
        )
        raise BadRequest(f"{field}: {message}", errors=[{"field": field, "message": message}])
    return data, False


_SURROGATE = re.compile("[\ud800-\udfff]")


def _find_surrogate(value: Any) -> tuple[tuple[Any, ...], str] | None:
    """(path, string) of the first string, key or value, holding a lone surrogate; or None.

    >>> _find_surrogate({"a": [1, {"b": "ok", "c\\udc00": 2}]})
    (('a', 1, 'c\\\\udc00'), 'c\\udc00')
    """
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return where, item
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return where + (_escaped(key),), key
                stack.append((child, where + (key,)))
        elif isinstance(item, list):
            stack.extend((child, where + (i,)) for i, child in enumerate(item))
    return None


def _escaped(text: str) -> str:
    """Text with lone surrogates written as escapes, so that a message can carry it.

    >>> _escaped("a\\udc00")
    'a\\\\udc00'
    """
    return _shorten(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def _validate(
    adapter: TypeAdapter[Any],
    data: Any,
    ctx: ValidationContext,
    prefix: tuple,
    strict_numbers: bool = False,
) -> Any:
    context = {"ctx": ctx, "strict_numbers": strict_numbers}
    try:
        return adapter.validate_python(data, context=context)
    except ValidationError as exc:
        raise bad_request_from(exc.errors(include_url=False), prefix) from None


def validate_learn(
    data: Any, ctx: ValidationContext, strict_numbers: bool = False
) -> list[LearnEvent]:
    """A single event object or {"events": [...]} -> validated events (``strict_numbers``:
    see ``load_json``)."""
    if not isinstance(data, dict):
        raise BadRequest(f"body: expected a JSON object, got {type(data).__name__}")
    if "events" in data:
        return _validate(_LEARN_BATCH, data, ctx, (), strict_numbers).events
    return [_validate(_LEARN_EVENT, data, ctx, (), strict_numbers)]


def validate_predict(
    data: Any, ctx: ValidationContext, strict_numbers: bool = False
) -> list[dict[str, Any]]:
    """{"events": [{"features": {...}}, ...]} -> list of feature dicts."""
    if not isinstance(data, dict):
        raise BadRequest(f"body: expected a JSON object, got {type(data).__name__}")
    if "events" not in data:
        raise BadRequest('events: required ({"events": [{"features": {...}}, ...]})')
    batch = _validate(_PREDICT_BATCH, data, ctx, (), strict_numbers)
    return [event.features for event in batch.events]


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:(\.[0-9]+)?([eE][+-]?[0-9]+)?)")


def parse_scalar(text: str) -> int | float | str:
    """A query-string or CSV value: JSON-style numbers become numbers, the rest stays a string.

    An integer with more digits than Python parses (4300) becomes a float (inf), which the
    feature checks refuse.

    >>> parse_scalar("12.5"), parse_scalar("7"), parse_scalar("5411"), parse_scalar("0042")
    (12.5, 7, 5411, '0042')
    >>> parse_scalar("nan"), parse_scalar("1e3"), parse_scalar("9" * 5000)
    ('nan', 1000.0, inf)
    """
    match = _NUMBER.fullmatch(text)
    if match is None:
        return text
    if match.group(1) is None and match.group(2) is None:
        try:
            return int(text)
        except ValueError:  # beyond sys.get_int_max_str_digits()
            return float(text)
    return float(text)


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def query_flag(params: Mapping[str, str], name: str, default: bool = False) -> bool:
    """A boolean query parameter, read the way pydantic reads one (case-insensitive
    true/false, 1/0, yes/no, on/off, t/f, y/n); anything else is a 422 naming the parameter.

    >>> query_flag({"wait": "True"}, "wait"), query_flag({}, "wait")
    (True, False)
    >>> query_flag({"wait": "maybe"}, "wait")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    service.errors.BadRequest: query.wait: expected a boolean (true/false, ...), got 'maybe'
    """
    raw = params.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    field = f"query.{name}"
    message = f"expected a boolean (true/false, 1/0, yes/no, on/off), got {raw[:50]!r}"
    raise BadRequest(f"{field}: {message}", errors=[{"field": field, "message": message}])


def query_features(
    items: Iterable[tuple[str, str]], max_features: int, ctx: ValidationContext | None = None
) -> dict[str, Any]:
    """GET /predict query parameters -> a features object (numbers parsed as numbers), checked
    as a body's features are (with the limits of ``ctx`` when given); an error names
    ``query.<name>``.

    >>> query_features([("amount", "12.5"), ("mcc", "5411")], 10)
    {'amount': 12.5, 'mcc': 5411}
    >>> query_features([("amount", "9" * 400)], 10)
    Traceback (most recent call last):
    service.errors.BadRequest: query.amount: number too large
    """
    features: dict[str, Any] = {}
    for key, raw in items:
        if key in features:
            raise BadRequest(f"query.{_shorten(key)}: given more than once")
        value = features[key] = parse_scalar(raw)
        if value.__class__ is float and math.isinf(value) and raw.lstrip("-").isdigit():
            raise BadRequest(f"query.{_shorten(key)}: number too large")  # > 4300 digits
    try:
        if ctx is None:
            check_features(features, max_features)
        else:
            ctx.check_features(features)
    except PydanticCustomError as exc:
        bad = (exc.context or {}).get("key")
        field = f"query.{bad}" if bad else "query"
        message = exc.message()
        raise BadRequest(
            f"{field}: {message}", errors=[{"field": field, "message": message}]
        ) from None
    return features
