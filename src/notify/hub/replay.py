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
    """Frames on `subjects` after `since`, oldest first, merged across subjects by seq.

    Everything is read up to one snapshot of the stream's last sequence: the socket is
    already registered, so anything later reaches it live (held until replay is done).
    Reading each subject to its own moment instead could skip a frame between them."""
    state = (await js.stream_info(STREAM)).state
    upto = state.last_seq
    if since >= upto:
        return []
    if since + 1 < state.first_seq:
        raise ReplayUnavailable(
            f"seq {since} is older than the retained stream (oldest is {state.first_seq})"
        )
    per_subject = [await _read(js, subject, since + 1, upto, limit) for subject in subjects]
    merged = list(heapq.merge(*per_subject, key=lambda item: item[0]))
    if len(merged) > limit:
        raise ReplayUnavailable(f"more than {limit} messages were missed; reload the inbox")
    return merged


async def _read(
    js: JetStreamContext, subject: str, start: int, upto: int, limit: int
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
    name = None
    try:
        info = await sub.consumer_info()
        name, pending = info.name, info.num_pending or 0
        frames: list[tuple[int, Frame]] = []
        fetched = 0
        while fetched < pending and len(frames) <= limit:
            try:
                msgs = await sub.fetch(min(BATCH, pending - fetched), timeout=2)
            except nats.errors.TimeoutError:
                break
            fetched += len(msgs)
            await msgs[-1].ack()
            for seq, frame in map(frame_of, msgs):
                if seq > upto:
                    return frames
                frames.append((seq, frame))
        return frames
    finally:
        await sub.unsubscribe()
        if name is not None:
            with contextlib.suppress(Exception):
                await js.delete_consumer(STREAM, name)
