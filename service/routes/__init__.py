"""One router per resource; `ROUTERS` is what `create_app` mounts."""

from service.routes.drift import router as drift
from service.routes.health import router as health
from service.routes.learn import router as learn
from service.routes.metrics import router as metrics
from service.routes.models import router as models
from service.routes.predict import router as predict
from service.routes.state import router as state
from service.routes.status import router as status

ROUTERS = (learn, predict, drift, status, state, metrics, health, models)

__all__ = ["ROUTERS"]
