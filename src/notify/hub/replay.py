"""Replay: what a connection missed after a `seq`, read back from the stream in order."""

from __future__ import annotations

import contextlib
import heapq
import logging

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from notify.core.bus import STREAM
from notify.hub.dispatch import frame_of
from notify.hub.protocol import Frame

log = logging.getLogger("notify.hub.replay")
BATCH = 256


class ReplayUnavailable(Exception):
    """The asked-for position is older than the stream keeps (or too far behind)."""


async def missed(
    js: JetStreamContext, subjects: list[str], since: int, limit: int
) -> list[tuple[int, Frame]]:
    """Frames on `subjects` after `since`, oldest first, merged across subjects by seq."""
    state = (await js.stream_info(STREAM)).state
    if since >= state.last_seq:
        return []
    if since + 1 < state.first_seq:
        raise ReplayUnavailable(
            f"seq {since} is older than the retained stream (oldest is {state.first_seq})"
        )
    per_subject = [await _read(js, subject, since + 1, limit) for subject in subjects]
    merged = list(heapq.merge(*per_subject))
    if len(merged) > limit:
        raise ReplayUnavailable(f"more than {limit} messages were missed; reload the inbox")
    return merged


async def _read(
    js: JetStreamContext, subject: str, start: int, limit: int
) -> list[tuple[int, Frame]]:
    # Pull consumers need explicit acks on NATS 2.9; ack-all on the last of each batch.
    sub = await js.pull_subscribe(
        subject,
        stream=STREAM,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=AckPolicy.ALL,
            inactive_threshold=30.0,
            max_ack_pending=BATCH * 4,
        ),
    )
    info = await sub.consumer_info()
    try:
        pending = info.num_pending or 0
        frames: list[tuple[int, Frame]] = []
        while len(frames) < min(pending, limit + 1):
            try:
                msgs = await sub.fetch(min(BATCH, pending - len(frames)), timeout=2)
            except nats.errors.TimeoutError:
                break
            frames.extend(frame_of(m) for m in msgs)
            await msgs[-1].ack()
        return frames
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(STREAM, info.name)
