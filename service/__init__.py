"""HTTP and infrastructure around `models/`: FastAPI app, settings, Redis store, learner loop,
Prometheus metrics, the embedded Redis-protocol server for the default run, and the Python
client (`service.client`)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("streambalance")
except PackageNotFoundError:  # a source tree on PYTHONPATH that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
