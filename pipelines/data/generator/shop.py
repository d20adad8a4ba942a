"""``shopml data generate``: build the world, simulate sessions chunk by chunk, write a snapshot.

Memory stays bounded: events are simulated and written one chunk of sessions at a
time (one parquet row group each). The number of events is exactly ``cfg.events``:
sessions are planned from a pilot estimate of events per session with a small
surplus, and the last chunk is cut at ``cfg.events`` (the cut keeps whole sessions
plus a time-ordered prefix of one, so every funnel stays valid).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.data.contract import EVENT_TYPES, TS, schema
from pipelines.data.generator.behaviour import (
    SEARCH_CLICK,
    Chunk,
    DurableMemory,
    plan_sessions,
    simulate_chunk,
)
from pipelines.data.generator.ids import format_ids
from pipelines.data.generator.world import (
    GeneratorConfig,
    World,
    build_world,
    items_table,
    rng_for,
    users_table,
)
from pipelines.data.snapshot import Snapshot, SnapshotWriter, TableStream, write_snapshot

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class GenerateResult:
    path: Path
    snapshot_id: str
    rows: dict[str, int]
    seconds: float


@dataclass
class _Counters:
    events: int = 0
    sessions: int = 0
    queries: int = 0
    judged_queries: int = 0
    judgments: list[tuple[str, str, float]] = field(default_factory=list)
    judged_pairs: set[tuple[str, str]] = field(default_factory=set)


def _ts(seconds: np.ndarray) -> pa.Array:
    """Epoch seconds to UTC timestamps, rounded to the millisecond."""
    return pa.array(np.round(seconds * 1000.0).astype(np.int64) * 1000, type=pa.int64()).cast(TS)


def _lists(values: pa.Array, counts: np.ndarray) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


class _Emitter:
    """Turns simulated chunks into contract tables with global ids."""

    def __init__(self, world: World, cfg: GeneratorConfig) -> None:
        self.cfg = cfg
        self.user_ids = world.user_ids()
        self.item_ids = world.item_ids()
        self.types = pa.array(EVENT_TYPES, type=pa.string())
        self.width = len(str(cfg.events - 1))
        self.c = _Counters()

    def emit(self, chunk: Chunk, budget: int, events: TableStream, queries: TableStream) -> int:
        cut = min(len(chunk.session), budget)
        last_rank = (
            chunk.session_rank[chunk.session[cut - 1]]
            if cut < len(chunk.session)
            else np.iinfo(np.int64).max
        )

        # Queries kept: those of sessions up to the cut, numbered in time order.
        q_keep = np.flatnonzero(chunk.session_rank[chunk.query_session] <= last_rank)
        q_keep = q_keep[np.argsort(chunk.query_ts[q_keep], kind="stable")]
        q_rank = np.full(len(chunk.query_session), -1, dtype=np.int64)
        q_rank[q_keep] = np.arange(len(q_keep))

        o = np.argsort(chunk.ts[:cut], kind="stable")
        etype, ev_query = chunk.etype[:cut][o], chunk.query[:cut][o]
        item, ts = chunk.item[:cut][o], chunk.ts[:cut][o]
        has_q = ev_query >= 0
        g_query = np.zeros(cut, dtype=np.int64)
        g_query[has_q] = self.c.queries + q_rank[ev_query[has_q]]
        qty, value = chunk.quantity[:cut][o], chunk.value[:cut][o]
        events.write(
            pa.table(
                {
                    "event_id": format_ids("e", self.c.events + np.arange(cut), width=self.width),
                    "user_id": self.user_ids.take(pa.array(chunk.user[:cut][o])),
                    "item_id": self.item_ids.take(pa.array(item)),
                    "event_type": self.types.take(pa.array(etype)),
                    "ts": _ts(ts),
                    "session_id": format_ids("s", self.c.sessions + chunk.session[:cut][o]),
                    "query_id": pc.if_else(
                        pa.array(has_q), format_ids("q", g_query), pa.scalar(None, pa.string())
                    ),
                    "quantity": pa.array(qty, type=pa.int32(), mask=qty == 0),
                    "value": pa.array(value, type=pa.float64(), mask=np.isnan(value)),
                    "request_id": pa.nulls(cut, pa.string()),
                    "position": pa.nulls(cut, pa.int32()),
                },
                schema=schema("events"),
            )
        )

        # Clicked ids come from the search_click events actually written.
        clicks = np.flatnonzero(etype == SEARCH_CLICK)
        c_rank = q_rank[ev_query[clicks]]
        co = np.lexsort((ts[clicks], c_rank))
        shown = chunk.searches.shown[q_keep]
        valid = shown >= 0
        queries.write(
            pa.table(
                {
                    "query_id": format_ids("q", self.c.queries + np.arange(len(q_keep))),
                    "user_id": self.user_ids.take(pa.array(chunk.query_user[q_keep])),
                    "ts": _ts(chunk.query_ts[q_keep]),
                    "text": pa.array([chunk.searches.texts[i] for i in q_keep], type=pa.string()),
                    "shown_item_ids": _lists(
                        self.item_ids.take(pa.array(shown[valid])), valid.sum(axis=1)
                    ),
                    "clicked_item_ids": _lists(
                        self.item_ids.take(pa.array(item[clicks][co])),
                        np.bincount(c_rank, minlength=len(q_keep)),
                    ),
                },
                schema=schema("queries"),
            )
        )
        self._judge(chunk, q_keep)
        self.c.events += cut
        self.c.sessions += chunk.n_sessions
        self.c.queries += len(q_keep)
        return cut

    def _judge(self, chunk: Chunk, q_keep: np.ndarray) -> None:
        """True relevance grades of the shown results, for the first ``judged_queries`` queries."""
        for q in q_keep[: max(self.cfg.judged_queries - self.c.judged_queries, 0)]:
            text = chunk.searches.texts[q]
            for item, grade in zip(chunk.searches.shown[q], chunk.searches.grade[q], strict=True):
                if item < 0:
                    continue
                pair = (text, self.item_ids[int(item)].as_py())
                if pair not in self.c.judged_pairs:
                    self.c.judged_pairs.add(pair)
                    self.c.judgments.append((*pair, float(grade)))
            self.c.judged_queries += 1

    def judgments_table(self) -> pa.Table:
        rows = self.c.judgments
        return pa.table(
            {
                "query": pa.array([r[0] for r in rows], type=pa.string()),
                "item_id": pa.array([r[1] for r in rows], type=pa.string()),
                "relevance": pa.array([r[2] for r in rows], type=pa.float64()),
            },
            schema=schema("judgments"),
        )


def _events_per_session(world: World) -> float:
    """Pilot estimate of events per planned session (reorders included)."""
    pilot = plan_sessions(world, 4_000, rng_for(world.cfg, 9))
    chunk = simulate_chunk(world, pilot, rng_for(world.cfg, 9, 1), DurableMemory(world.n_items))
    return max(len(chunk.session) / 4_000, 0.5)


def _simulate_activity(world: World, writer: SnapshotWriter, progress: Progress | None) -> _Emitter:
    cfg = world.cfg
    per_session = _events_per_session(world)
    emitter = _Emitter(world, cfg)
    memory = DurableMemory(world.n_items)
    started = time.perf_counter()
    with writer.stream("events") as events, writer.stream("queries") as queries:
        batch = 0
        while emitter.c.events < cfg.events:
            remaining = cfg.events - emitter.c.events
            planned = plan_sessions(
                world, math.ceil(remaining / per_session * 1.03) + 50, rng_for(cfg, 10, batch)
            )
            for k, lo in enumerate(range(0, len(planned), cfg.chunk_sessions)):
                chunk = simulate_chunk(
                    world,
                    planned.slice(lo, lo + cfg.chunk_sessions),
                    rng_for(cfg, 11, batch, k),
                    memory,
                )
                emitter.emit(chunk, cfg.events - emitter.c.events, events, queries)
                rate = emitter.c.events / max(time.perf_counter() - started, 1e-9)
                log.debug(
                    "generated %s / %s events (%s events/s)",
                    f"{emitter.c.events:,}",
                    f"{cfg.events:,}",
                    f"{rate:,.0f}",
                )
                if progress:
                    progress(emitter.c.events, cfg.events)
                if emitter.c.events >= cfg.events:
                    break
            batch += 1
    return emitter


def generate_shop(
    cfg: GeneratorConfig,
    *,
    out: str | Path,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> GenerateResult:
    """Generate a shop for ``cfg`` and write it as a snapshot at ``out`` (atomically).

    The tables are byte-identical for the same ``cfg`` (the manifest's ``created_at`` differs).
    """
    started = time.perf_counter()
    world = build_world(cfg)
    params = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(cfg).items()}
    producer = {"name": "shopml.generator", "version": GENERATOR_VERSION, "params": params}
    with write_snapshot(out, source="generator", producer=producer, overwrite=overwrite) as writer:
        writer.write_table("users", users_table(world))
        writer.write_table("items", items_table(world))
        emitter = _simulate_activity(world, writer, progress)
        if emitter.c.judgments:
            writer.write_table("judgments", emitter.judgments_table())
    snap = Snapshot.open(out)
    return GenerateResult(
        path=snap.path,
        snapshot_id=snap.id,
        rows=dict(snap.manifest["row_counts"]),
        seconds=time.perf_counter() - started,
    )
