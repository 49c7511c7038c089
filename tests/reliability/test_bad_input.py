"""Issue 6 §6 and issue 18 (audit findings 8, 9, 18; its T2): malformed, hostile and boundary
input never yields a 5xx; a bad field gets a 422 that names it; afterwards the model is finite
and /state consistent. The audit's cases are here: integers too long for a float (or for
Python's int parser) in a query, lone UTF-16 surrogates (`\\ud800`) in keys and values,
integer ids past the id limit, overlong feature names and values, and timestamps far in the
past or the future."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import httpx
import orjson
import pytest

from service.settings import Settings
from tests.reliability.conftest import running

OK = {"amount": 12.5, "mcc": "5411"}
NOW = time.time()


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


# (name, path, raw body, allowed statuses, text the 422 detail must contain)
CASES: list[tuple[str, str, str | bytes, set[int], str | None]] = [
    (
        "NaN feature",
        "/learn",
        '{"features": {"amount": NaN}, "label": "fraud"}',
        {422},
        "features.amount",
    ),
    (
        "Infinity feature",
        "/learn",
        '{"features": {"amount": Infinity}, "label": 1}',
        {422},
        "features.amount",
    ),
    (
        "-Infinity in a batch",
        "/learn",
        '{"events": [{"features": {"a": 1}, "label": 0},'
        ' {"features": {"amount": -Infinity}, "label": 0}]}',
        {422},
        "events[1].features.amount",
    ),
    (
        "1e309 (overflows to inf)",
        "/learn",
        '{"features": {"amount": 1e309}, "label": 0}',
        {422},
        "amount",
    ),
    (
        "1e308 (finite, extreme)",
        "/learn",
        '{"features": {"amount": 1e308, "b": -1e308}, "label": 0}',
        {202, 422},
        None,
    ),
    (
        "huge int",
        "/learn",
        '{"features": {"n": ' + "9" * 400 + '}, "label": 0}',
        {422},
        "features.n",
    ),
    (
        "huge string value",
        "/learn",
        orjson.dumps({"features": {"note": "x" * 500_000}, "label": 0}),
        {422},
        "features.note",
    ),
    (
        "string value past the value limit",
        "/learn",
        orjson.dumps({"features": {"note": "x" * 1025}, "label": 0}),
        {422},
        "features.note",
    ),
    (
        "huge id",
        "/learn",
        orjson.dumps({"id": "i" * 5000, "features": OK, "label": 0}),
        {422},
        "id",
    ),
    (
        "huge feature name",
        "/learn",
        orjson.dumps({"features": {"k" * 100_000: 1.0}, "label": 0}),
        {422},
        "features.kkkk",
    ),
    (
        "feature name past the name limit",
        "/learn",
        orjson.dumps({"events": [{"features": {"n" * 257: 1.0}, "label": 0}]}),
        {422},
        "events[0].features.nnnn",
    ),
    (
        "integer id of 3000 digits",
        "/learn",
        '{"id": ' + "7" * 3000 + ', "features": {"a": 1}, "label": 0}',
        {422},
        "id",
    ),
    (
        "lone surrogate as a feature name",
        "/learn",
        '{"features": {"\\ud800": "x"}, "label": "legit"}',
        {422},
        "features",
    ),
    (
        "lone surrogate as a feature value",
        "/learn",
        '{"features": {"a": "\\udc00"}, "label": "legit"}',
        {422},
        "features.a",
    ),
    (
        "lone surrogate in an id",
        "/learn",
        '{"events": [{"id": "tx-\\ud800", "features": {"a": 1}, "label": 0}]}',
        {422},
        "events[0].id",
    ),
    (
        "lone surrogate in a prediction id",
        "/learn",
        '{"prediction_id": "\\udfff", "label": 0}',
        {422},
        "prediction_id",
    ),
    (
        "lone surrogate in a label",
        "/learn",
        '{"features": {"a": 1}, "label": "fr\\ud800aud"}',
        {422},
        "label",
    ),
    (
        "timestamp 1e300",
        "/learn",
        '{"features": {"a": 1}, "label": 0, "timestamp": 1e300}',
        {422},
        "timestamp",
    ),
    (
        "timestamp -1e12",
        "/learn",
        '{"features": {"a": 1}, "label": 0, "timestamp": -1e12}',
        {422},
        "timestamp",
    ),
    (
        "timestamp in the year 9999",
        "/learn",
        '{"features": {"a": 1}, "label": 0, "timestamp": "9999-12-31T23:59:59"}',
        {422},
        "timestamp",
    ),
    (
        "timestamp an hour ahead",
        "/learn",
        orjson.dumps(
            {
                "events": [
                    {"features": {"a": 1}, "label": 0, "timestamp": NOW},
                    {"features": {"a": 1}, "label": 0, "timestamp": NOW + 3600},
                ]
            }
        ),
        {422},
        "events[1].timestamp",
    ),
    (
        "timestamp a minute ago (accepted)",
        "/learn",
        orjson.dumps({"features": {"a": 1}, "label": 0, "timestamp": NOW - 60}),
        {202},
        None,
    ),
    (
        "deep nesting in a feature",
        "/learn",
        '{"features": {"a": ' + _deep(5000) + '}, "label": 0}',
        {422},
        None,
    ),
    ("deep nesting, whole body", "/learn", _deep(200_000), {422}, None),
    (
        "nested object feature",
        "/learn",
        '{"features": {"a": {"b": 1}}, "label": 0}',
        {422},
        "features.a",
    ),
    (
        "5000 features",
        "/learn",
        orjson.dumps({"features": {f"f{i}": i for i in range(5000)}, "label": 0}),
        {422},
        "features",
    ),
    ("empty batch", "/learn", '{"events": []}', {422}, "events"),
    (
        "1001 events",
        "/learn",
        orjson.dumps({"events": [{"features": OK, "label": 0}] * 1001}),
        {422},
        "events",
    ),
    (
        "body over 1 MiB",
        "/learn",
        orjson.dumps({"events": [{"features": {"s": "y" * 2_000_000}, "label": 0}]}),
        {413},
        None,
    ),
    ("unknown label", "/learn", '{"features": {"a": 1}, "label": "maybe"}', {422}, "label"),
    ("label index out of range", "/learn", '{"features": {"a": 1}, "label": 7}', {422}, "label"),
    ("label of wrong type", "/learn", '{"features": {"a": 1}, "label": 1.5}', {422}, "label"),
    ("label true", "/learn", '{"features": {"a": 1}, "label": true}', {422}, "label"),
    ("features a string", "/learn", '{"features": "amount=1", "label": 0}', {422}, "features"),
    ("id a list", "/learn", '{"id": [1], "features": {"a": 1}, "label": 0}', {422}, "id"),
    (
        "timestamp garbage",
        "/learn",
        '{"features": {"a": 1}, "label": 0, "timestamp": "yesterday"}',
        {422},
        "timestamp",
    ),
    (
        "unknown field",
        "/learn",
        '{"features": {"a": 1}, "label": 0, "weight": 100}',
        {422},
        "weight",
    ),
    ("missing label", "/learn", '{"features": {"a": 1}}', {422}, "label"),
    ("not JSON", "/learn", "{features: 1", {422}, "body"),
    ("JSON null", "/learn", "null", {422}, None),
    ("JSON list", "/learn", "[1, 2]", {422}, None),
    ("empty body", "/learn", "", {422}, None),
    ("invalid UTF-8", "/learn", b'{"features": {"a": "\xff\xfe"}, "label": 0}', {422}, None),
    (
        "late label for unknown prediction",
        "/learn",
        '{"prediction_id": "nope", "label": 0}',
        {422},
        "prediction_id",
    ),
    (
        "predict NaN",
        "/predict",
        '{"events": [{"features": {"a": NaN}}]}',
        {422},
        "events[0].features.a",
    ),
    ("predict empty batch", "/predict", '{"events": []}', {422}, "events"),
    (
        "predict 1001 events",
        "/predict",
        orjson.dumps({"events": [{"features": OK}] * 1001}),
        {422},
        "events",
    ),
    (
        "predict 1e308",
        "/predict",
        '{"events": [{"features": {"amount": 1e308}}]}',
        {200, 422},
        None,
    ),
    (
        "predict lone surrogate as a feature name",
        "/predict",
        '{"events": [{"features": {"\\ud800": 1.5}}]}',
        {422},
        "events[0].features",
    ),
    (
        "predict lone surrogate as a feature value",
        "/predict",
        '{"events": [{"features": {"a": 1}}, {"features": {"mcc": "\\udc00"}}]}',
        {422},
        "events[1].features.mcc",
    ),
    (
        "predict feature name past the name limit",
        "/predict",
        orjson.dumps({"events": [{"features": {"n" * 300: 1}}]}),
        {422},
        "events[0].features.nnnn",
    ),
    (
        "predict deep nesting",
        "/predict",
        '{"events": [{"features": {"a": ' + _deep(3000) + "}}]}",
        {422},
        None,
    ),
]
# (name, raw query string, allowed statuses, text the 422 detail must contain)
GET_CASES: list[tuple[str, str, set[int], str | None]] = [
    ("GET nan", "amount=nan", {200, 422}, None),
    ("GET inf", "amount=1e999", {422}, "query.amount"),
    ("GET 1e308", "amount=1e308", {200, 422}, None),
    ("GET 400-digit integer", "amount=" + "9" * 400, {422}, "query.amount"),
    ("GET 5000-digit integer", "amount=" + "9" * 5000, {422}, "query.amount"),
    ("GET huge value", "note=" + "z" * 20_000, {414, 422, 431}, "query.note"),
    ("GET value past the value limit", "note=" + "z" * 1025, {422}, "query.note"),
    ("GET name past the name limit", "n" * 257 + "=1", {422}, "query.nnnn"),
    ("GET lone surrogate as a name (UTF-8 of U+D800)", "%ED%A0%80=1", {200, 422}, None),
    ("GET 2000 params", "&".join(f"p{i}=1" for i in range(2000)), {422, 414, 431}, None),
]


def _finite_state(body: dict) -> list[str]:
    problems = []
    if body["events_learned"] != sum(body["counts"].values()):
        problems.append(f"events_learned {body['events_learned']} != sum(counts) {body['counts']}")
    for name in ("class_frequencies", "factors"):
        values = list(body[name].values())
        if not all(isinstance(v, float | int) and math.isfinite(v) for v in values):
            problems.append(f"{name} not finite: {values}")
    if not math.isclose(sum(body["class_frequencies"].values()), 1.0, rel_tol=1e-9):
        problems.append(f"frequencies do not sum to 1: {body['class_frequencies']}")
    return problems


@pytest.mark.slow
async def test_hostile_input_never_5xx_and_names_the_field(
    redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    seen: list[tuple[str, int, str]] = []
    problems: list[str] = []
    async with running(make_settings(redis_url=redis_url)) as (_, client):
        for name, path, body, allowed, field in CASES:
            try:
                response = await client.post(
                    path, content=body, headers={"Content-Type": "application/json"}
                )
            except Exception as exc:  # the app itself raised: as bad as a 500
                problems.append(f"{name}: raised {type(exc).__name__}: {exc}")
                continue
            detail = response.json().get("detail", "") if response.status_code >= 400 else ""
            seen.append((name, response.status_code, str(detail)[:80]))
            if response.status_code not in allowed:
                problems.append(
                    f"{name}: {response.status_code} not in {allowed} ({str(detail)[:120]})"
                )
            elif response.status_code == 422 and field and field not in str(detail):
                problems.append(f"{name}: 422 detail does not name {field!r}: {detail!r}")
        for name, query, allowed, field in GET_CASES:
            try:
                response = await client.get("/predict?" + query)
            except Exception as exc:  # the app itself raised: as bad as a 500
                problems.append(f"{name}: raised {type(exc).__name__}: {exc}")
                continue
            detail = response.json().get("detail", "") if response.status_code == 422 else ""
            seen.append((name, response.status_code, str(detail)[:80]))
            if response.status_code not in allowed:
                problems.append(
                    f"{name}: {response.status_code} not in {allowed}: {response.text[:120]}"
                )
            elif response.status_code == 422 and field and field not in str(detail):
                problems.append(f"{name}: 422 detail does not name {field!r}: {detail!r}")
        # Then the service still learns and serves sane numbers.
        good = await client.post("/learn?wait=true", json={"events": [
            {"features": {"amount": 900.0, "mcc": "5732"}, "label": "fraud"},
            {"features": {"amount": 15.0, "mcc": "5411"}, "label": "legit"},
        ]})  # fmt: skip
        problems += (
            []
            if good.status_code == 200
            else [f"good learn after fuzz: {good.status_code} {good.text}"]
        )
        predicted = await client.post("/predict", json={"events": [
            {"features": {"amount": 900.0, "mcc": "5732"}}, {"features": {"amount": 1e300}},
        ]})  # fmt: skip
        if predicted.status_code != 200:
            problems.append(f"predict after fuzz: {predicted.status_code} {predicted.text[:200]}")
        else:
            for p in predicted.json()["predictions"]:
                probs = list(p["probabilities"].values())
                if not (
                    all(math.isfinite(v) for v in probs)
                    and math.isclose(sum(probs), 1.0, rel_tol=1e-6)
                ):
                    problems.append(f"non-finite or unnormalized prediction {p}")
        problems += _finite_state((await client.get("/state")).json())
    codes: dict[int, int] = {}
    for _, code, _ in seen:
        codes[code] = codes.get(code, 0) + 1
    assert not problems, (
        f"{len(problems)} problems over {len(seen)} cases (statuses {codes}):\n"
        + "\n".join(problems)
    )


async def test_a_future_timestamp_in_the_stream_cannot_stop_time_decay(
    make_settings: Callable[..., Settings],
) -> None:
    """Audit finding 8, the learner's side: an entry stamped in the far future that reached
    the stream anyway (another producer, an older version) is clamped to now + skew, so the
    EMA's last_time never passes it and later events still decay the old evidence."""
    skew = 300.0
    settings = make_settings(time_half_life=3600.0, timestamp_max_skew_s=skew)
    async with running(settings) as (app, client):
        redis = app.state.runtime.redis
        keys = app.state.runtime.storage.keys
        poisoned = [{"features": {"amount": 1.0}, "label": 0, "timestamp": 1e12}]
        await redis.xadd(keys.events, {"e": orjson.dumps(poisoned)})
        response = await client.post(
            "/learn?wait=true",
            json={"features": {"amount": 2.0}, "label": "fraud", "timestamp": time.time()},
        )
        assert response.status_code == 200, response.text
        last_time = float(await redis.hget(keys.ema, "last_time"))
        trainer_state = app.state.runtime.served.trainer.estimator.state_dict()
    ceiling = time.time() + skew
    assert last_time <= ceiling, f"EMA last_time {last_time:.0f} passed now + skew {ceiling:.0f}"
    assert trainer_state["last_time"] <= ceiling, trainer_state


async def test_a_feature_error_past_the_validators_is_a_422_naming_the_field(
    make_settings: Callable[..., Settings],
) -> None:
    """Audit finding 9's backstop: if the featurizer refuses what validation let through, the
    client still gets a JSON 422 that names the feature, not a 500."""
    from models.features import FeatureError
    from service.http.app import create_app

    app = create_app(make_settings())

    @app.get("/test-feature-error")
    async def _raise() -> None:
        raise FeatureError("amount", "integer too large for a float")

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sb"
    ) as client:
        response = await client.get("/test-feature-error")
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "features.amount: integer too large for a float"
