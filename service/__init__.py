"""HTTP and infrastructure around `models/`: FastAPI app, settings, Redis store, learner loop,
Prometheus metrics and the embedded Redis-protocol server for the default run."""
