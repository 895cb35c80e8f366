"""What a digest says: the description's structure, built from one user's notifications."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from notify.digest.schemas import DigestContent, Summary, TypeGroup
from notify.notifications.schemas import PRIORITIES

RANK = {p: i for i, p in enumerate(PRIORITIES)}
TOP = 5
PER_TYPE = 20  # notifications listed per type; `count` is always the full number


@dataclass(frozen=True, slots=True)
class Item:
    """One notification as a digest sees it."""

    id: UUID
    title: str
    message: str
    notification_type: str
    priority: str
    action_url: str | None
    created_at: dt.datetime
    unread: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "title": self.title,
            "message": self.message,
            "notification_type": self.notification_type,
            "priority": self.priority,
            "action_url": self.action_url,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "status": "unread" if self.unread else "read",
        }


@dataclass(frozen=True, slots=True)
class Filters:
    """What a user's digest includes: since when, which types, from which priority up."""

    since: dt.datetime
    until: dt.datetime
    include_types: frozenset[str]
    min_priority: str

    def keep(self, item: Item) -> bool:
        return (
            self.since <= item.created_at < self.until
            and (not self.include_types or item.notification_type in self.include_types)
            and RANK.get(item.priority, 0) >= RANK.get(self.min_priority, 0)
        )


def build(day: dt.date, items: list[Item], f: Filters) -> DigestContent | None:
    """The digest of `items` that pass `f`, or None for an empty period (nothing is sent)."""
    content = preview(day, items, f)
    return content if content.summary.total_notifications else None


def preview(day: dt.date, items: list[Item], f: Filters) -> DigestContent:
    """The digest of `items` that pass `f`, empty or not."""
    kept = sorted((i for i in items if f.keep(i)), key=lambda i: (i.created_at, i.id), reverse=True)
    priorities = Counter(i.priority for i in kept)
    groups: dict[str, list[Item]] = {}
    for item in kept:
        groups.setdefault(item.notification_type, []).append(item)
    top = sorted(kept, key=lambda i: (RANK.get(i.priority, 0), i.created_at), reverse=True)
    encoded: dict[UUID, dict[str, Any]] = {}  # the top five are also in their groups

    def js(item: Item) -> dict[str, Any]:
        if (out := encoded.get(item.id)) is None:
            out = encoded[item.id] = item.as_json()
        return out

    return DigestContent(
        date=day,
        summary=Summary(
            total_notifications=len(kept),
            unread_notifications=sum(i.unread for i in kept),
            priority_breakdown={p: priorities.get(p, 0) for p in reversed(PRIORITIES)},
        ),
        notifications_by_type={
            t: TypeGroup(len(g), [js(i) for i in g[:PER_TYPE]])
            for t, g in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        },
        top_notifications=[js(i) for i in top[:TOP]],
        period_start=f.since,
        period_end=f.until,
    )


def title(content: DigestContent, frequency: str) -> str:
    return f"Your {frequency} digest for {content.date.isoformat()}"


def text(content: DigestContent) -> str:
    """The digest as readable plain text (the notification's `message`)."""
    s = content.summary
    counts = ", ".join(f"{n} {p}" for p, n in s.priority_breakdown.items() if n)
    lines = [
        f"{s.total_notifications} notification{'s' if s.total_notifications != 1 else ''} "
        f"({s.unread_notifications} unread): {counts}.",
        "",
        "Top:",
        *(f"- [{t['priority']}] {t['title']}" for t in content.top_notifications),
        "",
        "By type: "
        + ", ".join(f"{name} {g.count}" for name, g in content.notifications_by_type.items()),
    ]
    return "\n".join(lines)[:4000]
