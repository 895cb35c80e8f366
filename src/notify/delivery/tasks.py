"""The Taskiq messages API pods hand to the workers (written to the outbox, sent by the relay)."""

from __future__ import annotations

from uuid import UUID, uuid4

from taskiq.formatters.json_formatter import JSONFormatter
from taskiq.message import TaskiqMessage

DELIVER = "notify.deliver"
_FORMATTER = JSONFormatter()


def deliver_message(notification_id: UUID) -> bytes:
    """The bytes of a `deliver(notification_id)` task, as `kiq` would publish them."""
    message = TaskiqMessage(
        task_id=uuid4().hex,
        task_name=DELIVER,
        labels={},
        args=[str(notification_id)],
        kwargs={},
    )
    return _FORMATTER.dumps(message).message
