"""What a Redis failure means to a client of the service: a cause and a sentence naming it.

Redis refuses work in more ways than being unreachable: out of memory (`OOM`, maxmemory
reached with nothing it may evict), a read-only replica (`READONLY`), a cluster node that
does not hold the model's slot (`MOVED`/`ASK`), a cluster without quorum (`CLUSTERDOWN`), a
server still loading its data (`LOADING`). Each is a state of the server, not a fault of the
request, and each passes once the operator (or a failover) fixes the server: the HTTP layer
answers them with a JSON 503 naming the cause, and the learner waits them out instead of
counting the batch as failed.
"""

from __future__ import annotations

from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["SERVER_STATE_ERRORS", "describe_redis_error"]

# Server states that pass without any change to the request (MovedError is an AskError,
# MasterDownError a ClusterDownError).
SERVER_STATE_ERRORS: tuple[type[RedisError], ...] = (
    OutOfMemoryError,
    ReadOnlyError,
    AskError,
    ClusterDownError,
    TryAgainError,
    BusyLoadingError,
)


def describe_redis_error(exc: BaseException) -> tuple[str, str]:
    """(cause, message) of a Redis failure, for a 503 body or a readiness answer.

    >>> describe_redis_error(OutOfMemoryError("command not allowed when used memory > ..."))[0]
    'out_of_memory'
    >>> from redis.exceptions import MovedError
    >>> cause, message = describe_redis_error(MovedError("3999 10.0.0.2:6379"))
    >>> cause, message[:67]
    ('cluster_redirect', 'Redis answered a cluster redirection (MOVED slot 3999 to 10.0.0.2:6')
    """
    if isinstance(exc, OutOfMemoryError):
        return "out_of_memory", (
            "Redis is out of memory (OOM: used memory is above maxmemory and nothing may be "
            "evicted) and refused the write; nothing was stored"
        )
    if isinstance(exc, ReadOnlyError):
        return "read_only", (
            "Redis refused the write: REDIS_URL points at a read-only replica (READONLY); "
            "nothing was stored"
        )
    if isinstance(exc, AskError):
        kind = "ASK" if type(exc) is AskError else "MOVED"
        return "cluster_redirect", (
            f"Redis answered a cluster redirection ({kind} slot {exc.slot_id} to "
            f"{exc.node_addr[0]}:{exc.node_addr[1]}): REDIS_URL names a Redis Cluster node "
            "that does not hold this model's keys; nothing was stored"
        )
    if isinstance(exc, ClusterDownError):
        return "cluster_down", f"Redis Cluster is down (CLUSTERDOWN: {exc}); nothing was stored"
    if isinstance(exc, TryAgainError):
        return "try_again", f"Redis asked to try again (TRYAGAIN: {exc}); nothing was stored"
    if isinstance(exc, BusyLoadingError):
        return "loading", "Redis is loading its data set (LOADING); nothing was stored"
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "timeout", (
            f"Redis did not answer in time ({type(exc).__name__}: {exc}); the write may or may "
            "not have happened (resending events with their ids is safe)"
        )
    if isinstance(exc, RedisConnectionError | ConnectionError | OSError):
        return "unreachable", (
            f"Redis is unreachable ({type(exc).__name__}: {exc}); nothing was stored"
        )
    return "error", f"Redis refused the command ({type(exc).__name__}: {exc})"
