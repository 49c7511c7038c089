"""One router per resource; `ROUTERS` is what `create_app` mounts."""

from service.http.routes.drift import router as drift
from service.http.routes.health import router as health
from service.http.routes.learn import router as learn
from service.http.routes.metrics import router as metrics
from service.http.routes.models import router as models
from service.http.routes.predict import router as predict
from service.http.routes.state import router as state
from service.http.routes.status import router as status

ROUTERS = (learn, predict, drift, status, state, metrics, health, models)

__all__ = ["ROUTERS"]
