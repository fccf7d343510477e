"""The wall time of every stage result in a store (a finished `oct run`), from each result's
metrics["wall_seconds"] (`--demo-timings STORE`)."""

from __future__ import annotations

from typing import Any


def demo_timings(store_uri: str) -> dict[str, Any]:
    from character.pipeline.runner import RESULT_KIND, load_result
    from character.store import open_store

    store = open_store(store_uri)
    rows = []
    for manifest in sorted(store.list(RESULT_KIND), key=lambda m: m.created_at):
        result = load_result(store, manifest.key)
        rows.append({"stage": result.stage, "key": result.key[:12], "finished": manifest.created_at,
                     "wall_seconds": result.metrics.get("wall_seconds")})
    total = sum(r["wall_seconds"] or 0 for r in rows)
    return {"store": store_uri, "stages": rows, "total_seconds": round(total, 2)}
