"""The ML core of streambalance: usable with no HTTP and no Redis.

Featurizer, networks, class-frequency EMA, rescaling policies, loss strategies, the online
learner step, calibration, prequential metrics, drift monitors and snapshots. The service,
the benchmarks and the tests all run this same code.
"""
