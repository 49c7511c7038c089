"""bench.capacity on the test server: each record kind is measured with the service's own
storage code, the figures are plausible, and the tables hold every kind."""

from __future__ import annotations

from bench.capacity import measure, render


async def test_capacity_measures_every_record_kind(redis_url: str) -> None:
    footprints = await measure(redis_url, 1000)
    by_kind = {fp.what.split(" (")[0].split(",")[0]: fp for fp in footprints}
    assert set(by_kind) == {"stored prediction", "idempotency key", "stream entry"}, by_kind
    for fp in footprints:
        # A 9-feature card transaction is ~200 bytes of JSON: anything far outside is a bug.
        assert 40 < fp.memory_usage < 4000 and 40 < fp.used < 4000, fp
    assert by_kind["stored prediction"].used > by_kind["idempotency key"].used
    single, batched = (fp for fp in footprints if fp.what.startswith("stream entry"))
    assert batched.memory_usage < single.memory_usage  # one entry header per 100 events
    table = render(footprints, [1.0], [100.0], 1000, "valkey")
    assert table.count("| stored prediction | 100 |") == 1
    assert "1 GB holds" in table
