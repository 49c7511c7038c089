"""Validated events -> the records `POST /learn` appends to the stream, late labels joined.

A late label `{prediction_id, label}` takes the prediction's stored features and served record
(GETDEL: one label per prediction). If one prediction of a request is unknown, the request
learns nothing: what it already took is given back before the 422, so the client can resend.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from service.errors import BadRequest
from service.storage.prediction_store import PredictionStore

__all__ = ["LabeledEvent", "stream_records"]


class LabeledEvent(Protocol):
    """A validated `POST /learn` event (`service.http.schemas.LearnEvent`)."""

    id: Any
    features: dict[str, Any] | None
    label: Any
    timestamp: Any
    prediction_id: str | None


async def stream_records(
    events: Sequence[LabeledEvent],
    predictions: PredictionStore,
    *,
    batched: bool,
    give_back_ttl_s: int,
    observe_label_delay: Callable[[float], None],
) -> list[dict[str, Any]]:
    """One stream record per event: `{features, label, id?, timestamp?, served?}`.

    batched: the events came as `{"events": [...]}` (the error then names `events[i]`).
    give_back_ttl_s: TTL of predictions given back when the request is refused.
    observe_label_delay: gets the seconds from serving to this label, per late label.
    """
    records: list[dict[str, Any]] = []
    taken: list[tuple[str, dict[str, Any]]] = []
    taken_served: list[dict[str, Any] | None] = []
    for i, event in enumerate(events):
        features = event.features
        served = None
        if features is None:
            assert event.prediction_id is not None
            features, served = await predictions.take_with_served(event.prediction_id)
            if features is None:
                if taken:  # give back what this request consumed: it learns nothing
                    kept = [s for s in taken_served if s is not None]
                    await predictions.save_many(
                        taken,
                        give_back_ttl_s,
                        served=kept if len(kept) == len(taken) else None,
                    )
                field = f"events[{i}].prediction_id" if batched else "prediction_id"
                raise BadRequest(
                    f"{field}: unknown or expired prediction {event.prediction_id!r}",
                    reason="unknown_prediction",
                )
            taken.append((event.prediction_id, features))
            taken_served.append(served)
        record: dict[str, Any] = {"features": features, "label": event.label}
        if served is not None:  # production scoring (serving/production_scoring.py), label delay
            record["served"] = served
            observe_label_delay(max(0.0, time.time() - float(served["t"])))
        if event.id is not None:
            record["id"] = event.id
        if event.timestamp is not None:
            record["timestamp"] = event.timestamp
        records.append(record)
    return records
