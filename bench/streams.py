"""Benchmark streams: river generators under a class-prior schedule, simulated card
transactions (``bench.cardsim``), and small shipped or local data sets.

Every synthetic stream is built the same way: at event ``t`` the class is drawn first from the
scheduled class shares, then the generator (the concept active at ``t``) is drawn from until an
example of that class comes out. The schedules are written as fractions of the stream length,
so a short ``--quick`` stream has the same shape as the full 200k-event one.

The realistic streams (``REALISTIC``) are fraud streams in time order, with timestamps and the
time each label becomes known: a month of simulated card transactions per fraud mix, and the
public credit-card data set when a copy is on this machine (it is never downloaded).

A generated stream is cached on disk (pickle, keyed by name, seed and length) so that every
contender, in every worker process, reads the very same events in the same order.
"""

from __future__ import annotations

import csv
import fcntl
import math
import os
import pickle
import random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from river import datasets
from river.datasets import synth

from bench import cardsim

Event = dict[str, float]
Shares = Callable[[int], list[float]]  # event index -> class shares (sum to 1)
Concept = Callable[[int], int]  # event index -> index of the active generator
# What a builder returns: events and labels, optionally with per-event arrays ("timestamps",
# "label_times", anything else goes to Stream.extra).
Built = tuple[list[Event], list[int]] | tuple[list[Event], list[int], dict[str, np.ndarray]]

#: Upper bound on generator draws for one event; a class that does not come out within it
#: means the concept cannot produce that class and the stream is ill-defined.
MAX_TRIES = 10_000

CACHE_VERSION = 2


@dataclass(frozen=True)
class Stream:
    """One materialized stream: events in order, integer labels, drift positions."""

    name: str
    classes: list[str]
    features: list[Event]
    labels: np.ndarray  # int64 [n]
    drift_points: list[int]  # event indices where a new regime starts
    description: str
    #: Realistic streams only: unix seconds of each event, and when its label becomes known.
    timestamps: np.ndarray | None = None
    label_times: np.ndarray | None = None
    #: Extra per-event arrays a stream knows about itself (e.g. the card fraud scenario).
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class StreamSpec:
    """How to build a stream of ``n`` events for a seed."""

    name: str
    description: str
    classes: tuple[str, ...]
    build: Callable[[int, int], Built]  # (seed, n) -> events, labels[, per-event arrays]
    drifts: Callable[[int], list[int]]  # n -> drift points
    max_events: int | None = None  # real data sets are as long as they are
    realistic: bool = False  # in the --realistic set rather than the synthetic grid


class StreamUnavailable(RuntimeError):
    """A data set that is not on this machine (nothing is ever downloaded)."""


def _str_keys(x: dict) -> Event:
    # The hashing featurizer wants string feature names; some generators use int keys.
    return {k if isinstance(k, str) else f"x{k}": float(v) for k, v in x.items()}


def class_rejection(
    generators: list[Iterator[tuple[dict, int]]],
    shares: Shares,
    concept: Concept,
    n: int,
    seed: int,
    max_tries: int = MAX_TRIES,
) -> tuple[list[Event], list[int]]:
    """Draw ``n`` events: class from ``shares(t)``, then rejection from the active generator.

    >>> gen = iter([({"a": 1}, 0), ({"a": 2}, 1), ({"a": 3}, 1), ({"a": 4}, 0)] * 10)
    >>> xs, ys = class_rejection([gen], lambda t: [0.0, 1.0], lambda t: 0, 3, seed=0)
    >>> ys, [x["a"] for x in xs]
    ([1, 1, 1], [2.0, 3.0, 2.0])
    """
    rng = random.Random(seed)
    features: list[Event] = []
    labels: list[int] = []
    for t in range(n):
        p = shares(t)
        target = rng.choices(range(len(p)), weights=p)[0]
        source = generators[concept(t)]
        for _ in range(max_tries):
            x, y = next(source)
            if int(y) == target:
                break
        else:
            raise RuntimeError(
                f"class {target} did not come out of generator {concept(t)} "
                f"in {max_tries} draws at event {t}"
            )
        features.append(_str_keys(x))
        labels.append(target)
    return features, labels


def _segments(n: int, k: int) -> Callable[[int], int]:
    """Index of the equal-length segment (out of ``k``) that event ``t`` falls in."""
    return lambda t: min(t * k // n, k - 1)


def _segment_starts(n: int, k: int) -> list[int]:
    return [math.ceil(i * n / k) for i in range(1, k)]


def _binary(p_minority: float) -> list[float]:
    return [1.0 - p_minority, p_minority]


def _agrawal(functions: list[int], seed: int) -> list[Iterator]:
    return [
        iter(synth.Agrawal(classification_function=f, seed=seed * 100 + i))
        for i, f in enumerate(functions)
    ]


def _static_agrawal(share: float) -> Callable[[int, int], tuple[list[Event], list[int]]]:
    def build(seed: int, n: int) -> tuple[list[Event], list[int]]:
        return class_rejection(_agrawal([1], seed), lambda t: _binary(share), lambda t: 0, n, seed)

    return build


PRIOR_STEPS = [0.5, 0.2, 0.1, 0.05, 0.01]
FLIP_STEPS = [0.01, 0.02, 0.05, 0.10, 0.20, 0.50, 0.80, 0.90, 0.95, 0.98, 0.99]
CONCEPTS = [1, 2, 3, 4, 5]


def _build_s2(seed: int, n: int) -> tuple[list[Event], list[int]]:
    seg = _segments(n, len(PRIOR_STEPS))
    return class_rejection(
        _agrawal([1], seed), lambda t: _binary(PRIOR_STEPS[seg(t)]), lambda t: 0, n, seed
    )


def _build_s3(seed: int, n: int) -> tuple[list[Event], list[int]]:
    seg = _segments(n, len(FLIP_STEPS))
    return class_rejection(
        _agrawal([1], seed), lambda t: _binary(FLIP_STEPS[seg(t)]), lambda t: 0, n, seed
    )


def _build_s4(seed: int, n: int) -> tuple[list[Event], list[int]]:
    return class_rejection(
        _agrawal(CONCEPTS, seed), lambda t: _binary(0.01), _segments(n, len(CONCEPTS)), n, seed
    )


def _build_s5(seed: int, n: int) -> tuple[list[Event], list[int]]:
    seg = _segments(n, len(CONCEPTS))  # same 5 segments for prior and concept
    return class_rejection(
        _agrawal(CONCEPTS, seed), lambda t: _binary(PRIOR_STEPS[seg(t)]), seg, n, seed
    )


def _s6_share(t: int, n: int) -> float:
    # 5% +/- 4% with a period of 50k events at the full length (a quarter of the stream).
    period = n / 4
    return 0.05 + 0.04 * math.sin(2.0 * math.pi * t / period)


def _build_s6(seed: int, n: int) -> tuple[list[Event], list[int]]:
    gen = synth.Hyperplane(
        seed=seed,
        n_features=10,
        n_drift_features=2,
        mag_change=0.001,
        noise_percentage=0.05,
        sigma=0.1,
    )
    return class_rejection([iter(gen)], lambda t: _binary(_s6_share(t, n)), lambda t: 0, n, seed)


MULTI_SHARES = [0.986, 0.01, 0.003, 0.001]


def _build_multi(seed: int, n: int) -> tuple[list[Event], list[int]]:
    gen = synth.RandomRBF(
        seed_model=seed, seed_sample=seed + 1, n_classes=4, n_features=10, n_centroids=40
    )
    return class_rejection([iter(gen)], lambda t: MULTI_SHARES, lambda t: 0, n, seed)


def _build_shuttle(seed: int, n: int) -> tuple[list[Event], list[int]]:
    # Shipped inside river (shuttle.csv.gz); the file is sorted by class, so shuffle per seed.
    rows = [(_str_keys(x), int(y)) for x, y in datasets.Shuttle()]
    random.Random(seed).shuffle(rows)
    rows = rows[:n]
    return [x for x, _ in rows], [y for _, y in rows]


#: The simulated month: days 40-69 of the world, after 30-day windows and the 7-day label
#: delay have filled (about 300k transactions with the default world).
CARD_FIRST_DAY = 40
CARD_DAYS = 30


def _card_builder(mix: str) -> Callable[[int, int], Built]:
    def build(seed: int, n: int) -> Built:
        cfg = replace(cardsim.MIXES[mix], seed=seed, days=CARD_FIRST_DAY + CARD_DAYS)
        tx = cardsim.simulate(cfg)
        month = tx.select(tx.day() >= CARD_FIRST_DAY)
        month = month.select(np.arange(month.n) < n)
        extra = {
            "timestamps": month.time,
            "label_times": month.label_time,
            "scenario": month.scenario,
        }
        return cardsim.events(month), month.fraud.tolist(), extra

    return build


#: Where the public credit-card data set (creditcard.csv: Time, V1-V28, Amount, Class) is
#: looked for, first match wins. STREAMBALANCE_CREDITCARD_CSV names a file explicitly.
CREDITCARD_PATHS = (
    Path("../shared/data/creditcard.csv"),
    Path("/work/shared/data/creditcard.csv"),
)
#: Seconds since the first transaction are turned into dates from this day (2013-09-01 UTC).
CREDITCARD_EPOCH = 1_377_993_600.0


def creditcard_path() -> Path | None:
    """The credit-card CSV on this machine, or None (then the stream is unavailable)."""
    named = os.environ.get("STREAMBALANCE_CREDITCARD_CSV")
    if named:
        return Path(named)
    return next((p for p in CREDITCARD_PATHS if p.is_file()), None)


def read_creditcard(path: Path, n: int | None = None) -> Built:
    """Rows of the credit-card CSV in time order (the file's order, stable by Time): every
    column but Class and Time is a feature; a label is known at once (no delay column)."""
    features: list[Event] = []
    labels: list[int] = []
    times: list[float] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            label = int(float(row.pop("Class").strip('"')))
            seconds = float(row.pop("Time"))
            features.append({k: float(v) for k, v in row.items()})
            labels.append(label)
            times.append(CREDITCARD_EPOCH + seconds)
            if n is not None and len(labels) >= n:
                break
    order = sorted(range(len(times)), key=times.__getitem__)
    stamps = np.asarray([times[i] for i in order])
    return (
        [features[i] for i in order],
        [labels[i] for i in order],
        {"timestamps": stamps, "label_times": stamps.copy()},
    )


def _build_creditcard(seed: int, n: int) -> Built:
    path = creditcard_path()
    if path is None or not path.is_file():
        where = ", ".join(str(p) for p in CREDITCARD_PATHS)
        raise StreamUnavailable(
            "the public credit-card data set is not on this machine (looked for "
            f"{os.environ.get('STREAMBALANCE_CREDITCARD_CSV') or where}); set "
            "STREAMBALANCE_CREDITCARD_CSV or pass --creditcard PATH to use a copy"
        )
    return read_creditcard(path, n)


BINARY = ("majority", "minority")

SPECS: dict[str, StreamSpec] = {
    spec.name: spec
    for spec in [
        StreamSpec(
            "S1-1%",
            "Agrawal(1), static minority share 1%",
            BINARY,
            _static_agrawal(0.01),
            lambda n: [],
        ),
        StreamSpec(
            "S1-0.1%",
            "Agrawal(1), static minority share 0.1%",
            BINARY,
            _static_agrawal(0.001),
            lambda n: [],
        ),
        StreamSpec(
            "S1-5%",
            "Agrawal(1), static minority share 5%",
            BINARY,
            _static_agrawal(0.05),
            lambda n: [],
        ),
        StreamSpec(
            "S2",
            "Agrawal(1), prior drift 50->20->10->5->1% in 5 segments",
            BINARY,
            _build_s2,
            lambda n: _segment_starts(n, len(PRIOR_STEPS)),
        ),
        StreamSpec(
            "S3",
            "Agrawal(1), flipping imbalance 1..99% in 11 segments",
            BINARY,
            _build_s3,
            lambda n: _segment_starts(n, len(FLIP_STEPS)),
        ),
        StreamSpec(
            "S4",
            "Agrawal functions 1->5, abrupt concept drift, share 1%",
            BINARY,
            _build_s4,
            lambda n: _segment_starts(n, len(CONCEPTS)),
        ),
        StreamSpec(
            "S5",
            "S4 concept drift + S2 prior drift at the same points",
            BINARY,
            _build_s5,
            lambda n: _segment_starts(n, len(CONCEPTS)),
        ),
        StreamSpec(
            "S6",
            "Hyperplane(10 feats, 2 drifting, 5% noise), share 5%+/-4%",
            BINARY,
            _build_s6,
            lambda n: [],
        ),
        StreamSpec(
            "Shuttle",
            "river Shuttle (UCI Statlog), ~7% anomalies, shuffled",
            ("normal", "anomaly"),
            _build_shuttle,
            lambda n: [],
            max_events=49_097,
        ),
        StreamSpec(
            "Multi",
            "RandomRBF 4 classes, minority shares 1%, 0.3%, 0.1%",
            ("c0", "c1_1%", "c2_0.3%", "c3_0.1%"),
            _build_multi,
            lambda n: [],
        ),
        StreamSpec(
            "card-handbook",
            "simulated card transactions, a month, the handbook's fraud mix "
            "(amount > 220, compromised terminals, stolen cards), ~0.9% fraud",
            ("legit", "fraud"),
            _card_builder("handbook"),
            lambda n: [],
            realistic=True,
        ),
        StreamSpec(
            "card-theft",
            "simulated card transactions, a month, stolen cards dominate (3x amounts, half "
            "at night, weekly campaigns), few terminal compromises, ~0.8% fraud",
            ("legit", "fraud"),
            _card_builder("cardtheft"),
            lambda n: [],
            realistic=True,
        ),
        StreamSpec(
            "creditcard",
            "public credit-card data set (2 days, 0.17% fraud, PCA features), time order",
            ("legit", "fraud"),
            _build_creditcard,
            lambda n: [],
            max_events=284_807,
            realistic=True,
        ),
    ]
}
SYNTHETIC = tuple(name for name, spec in SPECS.items() if not spec.realistic)
REALISTIC = tuple(name for name, spec in SPECS.items() if spec.realistic)


def available(name: str) -> bool:
    """Whether stream ``name`` can be built here (a data set may be missing)."""
    if name != "creditcard":
        return True
    path = creditcard_path()
    return path is not None and path.is_file()


def default_cache_dir() -> Path:
    return Path(
        os.environ.get(
            "STREAMBALANCE_BENCH_CACHE", Path(tempfile.gettempdir()) / "streambalance-bench"
        )
    )


def load_stream(name: str, seed: int, n: int, cache_dir: Path | None = None) -> Stream:
    """Build (or read from the cache) stream ``name`` with ``n`` events for ``seed``.

    Concurrent workers asking for the same stream wait on a file lock, so it is generated once.
    """
    if name not in SPECS:
        raise ValueError(f"unknown stream {name!r}; known: {', '.join(SPECS)}")
    spec = SPECS[name]
    if spec.max_events is not None:
        n = min(n, spec.max_events)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cache = default_cache_dir() if cache_dir is None else cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    safe = name.replace("%", "pct")
    path = cache / f"v{CACHE_VERSION}-{safe}-s{seed}-n{n}.pkl"
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            with open(path, "rb") as f:
                built = pickle.load(f)
        else:
            built = spec.build(seed, n)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            with open(tmp, "wb") as f:
                pickle.dump(built, f, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.replace(path)
    features, labels = built[0], built[1]
    extra = dict(built[2]) if len(built) > 2 else {}
    return Stream(
        name=name,
        classes=list(spec.classes),
        features=features,
        labels=np.asarray(labels, dtype=np.int64),
        drift_points=spec.drifts(len(features)),
        description=spec.description,
        timestamps=extra.pop("timestamps", None),
        label_times=extra.pop("label_times", None),
        extra=extra,
    )
