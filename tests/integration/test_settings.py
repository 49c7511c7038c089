"""Settings: safe defaults, environment parsing, and bad values that stop start-up by name."""

from __future__ import annotations

import pytest

from service.settings import Settings, SettingsError, get_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("STREAMBALANCE_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    get_settings.cache_clear()


def test_defaults_are_safe() -> None:
    s = Settings()
    assert s.classes == ["legit", "fraud"]
    assert s.redis_url is None and s.role == "all" and s.api_key is None
    assert s.strategy == "logit_adjusted" and s.network == "mlp" and s.optimizer == "adam"
    assert 0 < s.lr and s.r_max >= 1 and 0 < s.smoothing <= 1


def test_environment_is_read_with_prefix_and_plain_redis_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("STREAMBALANCE_CLASSES", "ok,spam,abuse")
    monkeypatch.setenv("STREAMBALANCE_HIDDEN", "[32, 16]")
    monkeypatch.setenv("STREAMBALANCE_LR", "0.01")
    monkeypatch.setenv("STREAMBALANCE_STRATEGY_PARAMS", '{"gamma_focal": 1.5}')
    monkeypatch.setenv("STREAMBALANCE_STRATEGY", "focal")
    monkeypatch.setenv("STREAMBALANCE_API_KEY", "s3cret-key")
    s = get_settings()
    assert s.redis_url == "redis://cache:6379/0"
    assert s.classes == ["ok", "spam", "abuse"]
    assert s.hidden == [32, 16]
    assert s.lr == 0.01
    assert s.strategy_params == {"gamma_focal": 1.5}
    assert s.api_key is not None and s.api_key.get_secret_value() == "s3cret-key"
    assert "s3cret" not in repr(s)
    assert get_settings() is s  # cached


def test_prefixed_redis_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMBALANCE_REDIS_URL", "redis://a:1")
    monkeypatch.setenv("REDIS_URL", "redis://b:2")
    assert Settings().redis_url == "redis://a:1"


BAD = [
    ({"lr": -1}, r"STREAMBALANCE_LR: .*greater than 0"),
    ({"lr": float("nan")}, r"STREAMBALANCE_LR: .*finite"),
    ({"classes": ["fraud"]}, r"STREAMBALANCE_CLASSES: need at least 2"),
    ({"classes": ["a", "a"]}, r"STREAMBALANCE_CLASSES: class names must be unique"),
    ({"classes": "a, ,"}, r"STREAMBALANCE_CLASSES: need at least 2"),
    ({"strategy": "magic"}, r"STREAMBALANCE_STRATEGY: unknown strategy 'magic'"),
    ({"strategy": "focal", "strategy_params": {"nope": 1}}, r"STREAMBALANCE_STRATEGY_PARAMS: "),
    ({"network": "transformer"}, r"STREAMBALANCE_NETWORK: "),
    ({"hidden": [0]}, r"STREAMBALANCE_HIDDEN: hidden sizes"),
    ({"optimizer": "lbfgs"}, r"STREAMBALANCE_OPTIMIZER: "),
    ({"half_life": 0}, r"STREAMBALANCE_HALF_LIFE: "),
    ({"time_half_life": -5}, r"STREAMBALANCE_TIME_HALF_LIFE: "),
    ({"floor": 0.4, "classes": ["a", "b", "c"]}, r"STREAMBALANCE_FLOOR: 0.4 is too large"),
    ({"gamma": -0.5}, r"STREAMBALANCE_GAMMA: "),
    ({"r_max": 0.5}, r"STREAMBALANCE_R_MAX: .*greater than or equal to 1"),
    ({"smoothing": 0}, r"STREAMBALANCE_SMOOTHING: "),
    ({"smoothing": 1.5}, r"STREAMBALANCE_SMOOTHING: "),
    ({"max_event_loss": 0}, r"STREAMBALANCE_MAX_EVENT_LOSS: "),
    ({"batch_max_size": 0}, r"STREAMBALANCE_BATCH_MAX_SIZE: "),
    ({"batch_max_wait_ms": 0}, r"STREAMBALANCE_BATCH_MAX_WAIT_MS: "),
    ({"batch_linger_ms": -1}, r"STREAMBALANCE_BATCH_LINGER_MS: "),
    ({"checkpoint_every_steps": 0}, r"STREAMBALANCE_CHECKPOINT_EVERY_STEPS: "),
    ({"checkpoint_every_seconds": -1}, r"STREAMBALANCE_CHECKPOINT_EVERY_SECONDS: "),
    ({"hash_bits": 40}, r"STREAMBALANCE_HASH_BITS: "),
    ({"max_body_bytes": 10}, r"STREAMBALANCE_MAX_BODY_BYTES: "),
    ({"max_batch_events": 0}, r"STREAMBALANCE_MAX_BATCH_EVENTS: "),
    ({"max_features": 0}, r"STREAMBALANCE_MAX_FEATURES: "),
    ({"api_key": "short"}, r"STREAMBALANCE_API_KEY: API key must be at least 8"),
    # Audit finding 19: a non-ASCII key could never match the header's bytes.
    ({"api_key": "clé-secrète-2026"}, r"STREAMBALANCE_API_KEY: API key must be printable ASCII"),
    ({"api_key": "with a space"}, r"STREAMBALANCE_API_KEY: API key must be printable ASCII"),
    ({"api_key": "trailing-newline\n"}, r"STREAMBALANCE_API_KEY: API key must be printable"),
    ({"timestamp_max_skew_s": -1}, r"STREAMBALANCE_TIMESTAMP_MAX_SKEW_S: "),
    ({"redis_maxmemory": "lots"}, r"STREAMBALANCE_REDIS_MAXMEMORY: must be bytes or a size"),
    ({"redis_maxmemory_policy": "allkeys-lru"}, r"STREAMBALANCE_REDIS_MAXMEMORY_POLICY: "),
    ({"timestamp_max_age_s": 0}, r"STREAMBALANCE_TIMESTAMP_MAX_AGE_S: "),
    ({"max_feature_name_chars": 0}, r"STREAMBALANCE_MAX_FEATURE_NAME_CHARS: "),
    ({"max_feature_value_chars": 0}, r"STREAMBALANCE_MAX_FEATURE_VALUE_CHARS: "),
    ({"prediction_ttl_s": -1}, r"STREAMBALANCE_PREDICTION_TTL_S: "),
    ({"idempotency_ttl_s": 0}, r"STREAMBALANCE_IDEMPOTENCY_TTL_S: "),
    ({"role": "learner"}, r"STREAMBALANCE_ROLE: "),
    ({"role": "api"}, r"STREAMBALANCE_ROLE: role 'api' needs REDIS_URL"),
    ({"port": 70000}, r"STREAMBALANCE_PORT: "),
    # Audit 13: a non-loopback bind without a key takes writes from anyone who reaches it.
    ({"host": "0.0.0.0"}, r"STREAMBALANCE_HOST: '0.0.0.0' is reachable from other machines"),
    ({"host": "10.1.2.3"}, r"STREAMBALANCE_HOST: .*STREAMBALANCE_ALLOW_UNAUTHENTICATED"),
    ({"model_name": "a{b}"}, r"STREAMBALANCE_MODEL_NAME: "),
    ({"model_name": ""}, r"STREAMBALANCE_MODEL_NAME: "),
    ({"consumer": "has space"}, r"STREAMBALANCE_CONSUMER: "),
    ({"decision": "threshold"}, r"STREAMBALANCE_DECISION: "),
    ({"drift": {"bogus": 1}}, r"STREAMBALANCE_DRIFT: "),
    ({"clip_norm": 0}, r"STREAMBALANCE_CLIP_NORM: "),
    ({"factor_scheme": "sqrt"}, r"STREAMBALANCE_FACTOR_SCHEME: "),
]


@pytest.mark.parametrize(("values", "message"), BAD, ids=[next(iter(v)) for v, _ in BAD])
def test_bad_value_is_rejected_naming_the_setting(values: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings(**values)


def test_bad_environment_value_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMBALANCE_GAMMA", "lots")
    with pytest.raises(SettingsError, match=r"STREAMBALANCE_GAMMA: .*'lots'"):
        get_settings()


def test_several_problems_are_all_reported() -> None:
    with pytest.raises(SettingsError) as info:
        Settings(lr=0, batch_max_size=0)
    assert {name for name, _ in info.value.problems} == {
        "STREAMBALANCE_LR",
        "STREAMBALANCE_BATCH_MAX_SIZE",
    }


def test_settings_map_onto_the_trainer_config() -> None:
    s = Settings(classes=["ok", "bad", "worse"], network="mlp", hidden=[8], lr=0.2, gamma=0.5)
    config = s.trainer_config()
    assert list(config.classes) == ["ok", "bad", "worse"]
    assert config.network == "mlp" and tuple(config.hidden) == (8,)
    assert config.lr == 0.2 and config.gamma == 0.5 and config.n_bits == s.hash_bits


def test_unknown_prefixed_variable_is_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("STREAMBALANCE_LEARNING_RATE", "0.1")  # the setting is STREAMBALANCE_LR
    with caplog.at_level("WARNING"):
        assert get_settings().lr == Settings.model_fields["lr"].default  # not 0.1
    assert "STREAMBALANCE_LEARNING_RATE" in caplog.text
