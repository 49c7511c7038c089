"""The ML core of streambalance: usable with no HTTP and no Redis.

Featurizer, networks, class-frequency EMA, rescaling policies, loss strategies, the online
learner step, calibration, prequential metrics, drift monitors, snapshots, and the trainer
that runs them per micro-batch. The service, the benchmarks and the tests all run this same
code. Each submodule's ``__all__`` is re-exported here, so the two cannot drift apart
(tests/unit/test_exports.py checks it).
"""

from __future__ import annotations

from models import (
    analytic,
    calibration,
    drift,
    features,
    frequency,
    kernels,
    learner,
    metrics,
    networks,
    rescaling,
    sketch,
    snapshot,
    strategies,
    trainer,
)
from models.analytic import *  # noqa: F403
from models.calibration import *  # noqa: F403
from models.drift import *  # noqa: F403
from models.features import *  # noqa: F403
from models.frequency import *  # noqa: F403
from models.kernels import *  # noqa: F403
from models.learner import *  # noqa: F403
from models.metrics import *  # noqa: F403
from models.networks import *  # noqa: F403
from models.rescaling import *  # noqa: F403
from models.sketch import *  # noqa: F403
from models.snapshot import *  # noqa: F403
from models.strategies import *  # noqa: F403
from models.trainer import *  # noqa: F403

__all__ = [
    *analytic.__all__,
    *calibration.__all__,
    *drift.__all__,
    *features.__all__,
    *frequency.__all__,
    *kernels.__all__,
    *learner.__all__,
    *metrics.__all__,
    *networks.__all__,
    *rescaling.__all__,
    *sketch.__all__,
    *snapshot.__all__,
    *strategies.__all__,
    *trainer.__all__,
]
