"""All Redis I/O of the service: the client, key names, scripts and one store per aggregate.

Imports nothing from the layers above (HTTP, learner, operations); only `service.errors`-level
leaves and redis-py.
"""
