"""Service configuration: one `Settings` class read from `STREAMBALANCE_*` environment variables.

Every field has a safe default. A bad value raises `SettingsError` (a `ValueError`) whose message
names the environment variable, so a misconfigured service stops at start-up instead of learning
garbage. `REDIS_URL` is also read without the prefix (the usual name in container platforms).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "STREAMBALANCE_"

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "get_settings", "is_loopback"]


class SettingsError(ValueError):
    """An invalid configuration value; `str()` names the environment variable and the problem."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"invalid setting {name}: {why}" for name, why in problems))

    def __repr__(self) -> str:
        return f"SettingsError({self.problems!r})"

    @classmethod
    def from_validation(cls, exc: ValidationError) -> SettingsError:
        problems = []
        for err in exc.errors(include_url=False):
            message = err["msg"].removeprefix("Value error, ")
            if err["loc"]:
                field = str(err["loc"][0])
            else:  # whole-model checks say "<field>: why"
                field, _, message = message.partition(": ")
            env = field if field.isupper() else ENV_PREFIX + field.upper()
            if "input" in err and err["type"] != "value_error":
                message += f" (got {err['input']!r})"
            problems.append((env, message))
        return cls(problems)


def _split_list(value: Any) -> Any:
    """Accept a JSON list or a comma-separated string (friendlier in a shell or compose file)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _finite(value: float | None, name: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_MEMORY = re.compile(r"(?i)[0-9]+(?:b|k|kb|m|mb|g|gb)?")  # Redis' maxmemory notation
_API_KEY = re.compile(r"[\x21-\x7e]+")  # visible ASCII: no spaces, no control characters


class Settings(BaseSettings):
    """Everything the service reads from its environment (see the README's configuration table)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
        allow_inf_nan=False,
    )

    # where state lives
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STREAMBALANCE_REDIS_URL", "REDIS_URL", "redis_url"),
    )
    model_name: str = "default"
    data_dir: Path = Path("data")
    # The embedded server's memory budget and what it may evict there (an external Redis is
    # configured by its operator; see docs/deployment.md). Only keys with a TTL can go.
    redis_maxmemory: str = "1gb"
    redis_maxmemory_policy: Literal[
        "volatile-lru", "volatile-lfu", "volatile-ttl", "volatile-random", "noeviction"
    ] = "volatile-lru"
    role: Literal["all", "api"] = "all"
    consumer: str = "learner"

    # the learning problem
    classes: Annotated[list[str], NoDecode] = ["legit", "fraud"]
    # defaults chosen by the realistic quality benchmark (docs/benchmarks/realistic/)
    strategy: str = "logit_adjusted"
    strategy_params: dict[str, Any] = {}
    network: Literal["logreg", "mlp"] = "mlp"
    hidden: Annotated[list[int], NoDecode] = [64]
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(default=0.003, gt=0.0, le=10.0)
    half_life: float = Field(default=10000.0, gt=0.0)
    time_half_life: float | None = Field(default=None, gt=0.0)
    floor: float = Field(default=1e-4, gt=0.0, lt=0.5)
    gamma: float = Field(default=1.0, ge=0.0, le=4.0)
    r_max: float = Field(default=100.0, ge=1.0)
    smoothing: float = Field(default=0.05, gt=0.0, le=1.0)
    max_rel_change: float | None = Field(default=None, gt=0.0)
    max_event_loss: float = Field(default=10.0, gt=0.0)
    clip_norm: float | None = Field(default=None, gt=0.0)
    factor_scheme: Literal["inverse", "effective_number"] = "inverse"
    decision: Literal["balanced", "argmax", "threshold", "cost"] = "balanced"
    thresholds: list[float] | None = None
    cost_matrix: list[list[float]] | None = None
    drift: dict[str, Any] = {}
    seed: int = 0
    metrics_window: int = Field(default=2000, ge=10, le=1_000_000)
    hash_bits: int = Field(default=18, ge=4, le=24)
    max_features: int = Field(default=1000, ge=1, le=100_000)
    # Per-name model state and the hash caches grow with what clients send: bound the keys.
    max_feature_name_chars: int = Field(default=256, ge=1, le=65_536)
    max_feature_value_chars: int = Field(default=1024, ge=1, le=1_048_576)
    # Event timestamps outside [now - max age, now + max skew] are refused (422): one event
    # stamped in the far future would otherwise switch the time-decayed EMA off for good.
    timestamp_max_age_s: float = Field(default=5 * 365 * 86_400.0, gt=0.0)
    timestamp_max_skew_s: float = Field(default=300.0, ge=0.0, le=86_400.0)
    numeric_bins: int = Field(default=0, ge=0, le=1000)

    # learner loop
    batch_max_size: int = Field(default=64, ge=1, le=100_000)
    batch_max_wait_ms: int = Field(default=50, ge=1, le=60_000)
    # After a step on a part-full micro-batch, let more events arrive before the next read:
    # a step has a fixed cost (~0.9 ms here), so single-event traffic otherwise pays it
    # every few events. An idle learner is blocked in the read and still answers at once.
    batch_linger_ms: float = Field(default=5.0, ge=0.0, le=1000.0)
    checkpoint_every_steps: int = Field(default=200, ge=1)
    checkpoint_every_seconds: float = Field(default=10.0, gt=0.0)
    lease_ttl_s: float = Field(default=10.0, ge=1.0, le=600.0)
    claim_idle_ms: int = Field(default=60_000, ge=1000)
    max_deliveries: int = Field(default=5, ge=1)
    wait_timeout_s: float = Field(default=30.0, gt=0.0)

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_key: SecretStr | None = None
    # Serving a non-loopback address without API_KEY is refused unless this says an
    # authenticating gateway stands in front (see _check_combination).
    allow_unauthenticated: bool = False
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch_events: int = Field(default=1000, ge=1, le=100_000)
    prediction_ttl_s: int = Field(default=604_800, ge=0)  # late labels: 7 days; 0 keeps none
    idempotency_ttl_s: int = Field(default=86_400, ge=1)
    # abuse guards (service/ingest/rate_limit.py)
    rate_limit_per_s: float | None = Field(default=None, gt=0.0)
    rate_limit_burst: int = Field(default=1000, ge=1)
    rate_limit_header: str | None = None
    auth_read_routes: bool = False
    worker_metrics_port: int = Field(default=9100, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    torch_threads: int = Field(default=1, ge=1, le=256)
    # operations (service/serving/shadows.py, service/operations/model_control.py,
    # service/serving/history.py)
    shadows: Annotated[list[str], NoDecode] = []
    keep_versions: int = Field(default=5, ge=1, le=1000)
    history_interval_s: float = Field(default=2.0, gt=0.0, le=3600.0)
    history_size: int = Field(default=900, ge=10, le=100_000)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError.from_validation(exc) from None

    _split_classes = field_validator("classes", "hidden", "shadows", mode="before")(_split_list)

    @field_validator("shadows")
    @classmethod
    def _check_shadows(cls, value: list[str]) -> list[str]:
        from models.strategies import STRATEGIES

        for name in value:
            if name not in STRATEGIES:
                raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
        if len(set(value)) != len(value):
            raise ValueError(f"shadow strategies must be distinct, got {value!r}")
        return value

    @field_validator("redis_maxmemory")
    @classmethod
    def _check_maxmemory(cls, value: str) -> str:
        if not _MEMORY.fullmatch(value.strip()):
            raise ValueError(
                f"must be bytes or a size like 512mb or 2gb (0: no limit), got {value!r}"
            )
        return value.strip().lower()

    @field_validator("model_name", "consumer")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"must be 1-64 characters of letters, digits, '_.:-', got {value!r}")
        return value

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise ValueError(f"need at least 2 class names, got {value!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"class names must be unique, got {value!r}")
        if any(not name or name != name.strip() for name in value):
            raise ValueError(
                f"class names must be non-empty with no surrounding spaces, got {value!r}"
            )
        return value

    @field_validator("hidden")
    @classmethod
    def _check_hidden(cls, value: list[int]) -> list[int]:
        if not value or any(size < 1 or size > 65536 for size in value):
            raise ValueError(f"hidden sizes must be 1..65536, at least one layer, got {value!r}")
        return value

    @field_validator(
        "lr",
        "half_life",
        "time_half_life",
        "floor",
        "gamma",
        "r_max",
        "smoothing",
        "max_rel_change",
        "max_event_loss",
        "clip_norm",
        "rate_limit_per_s",
        "checkpoint_every_seconds",
        "wait_timeout_s",
        "timestamp_max_age_s",
    )
    @classmethod
    def _check_finite(cls, value: float | None) -> float | None:
        return _finite(value, "value")

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, value: str) -> str:
        from models.strategies import STRATEGIES

        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; choose one of {', '.join(STRATEGIES)}")
        return value

    @field_validator("api_key")
    @classmethod
    def _check_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        key = value.get_secret_value()
        if len(key) < 8:
            raise ValueError("API key must be at least 8 characters (or leave it unset)")
        # HTTP carries header values as bytes that servers decode as Latin-1, and clients
        # encode non-ASCII text in different ways: such a key could never match reliably.
        if not _API_KEY.fullmatch(key):
            raise ValueError(
                "API key must be printable ASCII without spaces (letters, digits, punctuation); "
                "it travels in the X-API-Key header"
            )
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> Settings:
        if self.role == "api" and self.redis_url is None:
            raise ValueError(
                "role: role 'api' needs REDIS_URL "
                "(a shared Redis where `streambalance worker` learns)"
            )
        if self.api_key is None and not self.allow_unauthenticated and not is_loopback(self.host):
            raise ValueError(
                f"host: {self.host!r} is reachable from other machines and no API key is set, "
                "so anyone who reaches the port could write to the model; set "
                "STREAMBALANCE_API_KEY (or STREAMBALANCE_ALLOW_UNAUTHENTICATED=true when a "
                "gateway in front authenticates every request)"
            )
        if self.floor * len(self.classes) >= 1.0:
            raise ValueError(
                f"floor: {self.floor} is too large for {len(self.classes)} classes "
                "(floor times the number of classes must stay below 1)"
            )
        try:
            self.trainer_config()
        except (TypeError, ValueError) as exc:
            # TrainerConfig messages start with the field name ("lr must be ...").
            message = str(exc)
            field = message.split(" ", 1)[0].rstrip(":")
            raise ValueError(
                f"{field}: {message}" if field in type(self).model_fields else f"trainer: {message}"
            ) from None
        return self

    def trainer_config(self) -> Any:
        """The `models.trainer.TrainerConfig` these settings describe."""
        from models.trainer import TrainerConfig

        return TrainerConfig(
            classes=list(self.classes),
            network=self.network,
            hidden=tuple(self.hidden),
            n_bits=self.hash_bits,
            optimizer=self.optimizer,
            lr=self.lr,
            strategy=self.strategy,
            strategy_params=dict(self.strategy_params),
            half_life=self.half_life,
            time_half_life=self.time_half_life,
            floor=self.floor,
            gamma=self.gamma,
            r_max=self.r_max,
            smoothing=self.smoothing,
            max_rel_change=self.max_rel_change,
            max_event_loss=self.max_event_loss,
            clip_norm=self.clip_norm,
            factor_scheme=self.factor_scheme,
            decision=self.decision,
            thresholds=self.thresholds,
            cost_matrix=self.cost_matrix,
            drift=dict(self.drift),
            seed=self.seed,
            metrics_window=self.metrics_window,
            max_features=self.max_features,
            numeric_bins=self.numeric_bins,
        )


def is_loopback(host: str) -> bool:
    """Only this machine can connect to `host`.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "", "10.0.0.5")]
    [True, True, True, False, False, False]
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once (tests build their own)."""
    settings = Settings()
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:  # most likely a typo; other tools' variables share the prefix, so not fatal
        logging.getLogger(__name__).warning("ignoring unknown settings: %s", ", ".join(unknown))
    return settings
