"""All Redis I/O of the service: the client, key names, scripts and one store per aggregate.

Imports nothing from the rest of the service: only redis-py, orjson and the standard library.
"""
