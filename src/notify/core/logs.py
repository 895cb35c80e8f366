"""Logging set-up shared by every command."""

from __future__ import annotations

import logging

from notify.core.config import Settings


def configure(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Taskiq logs every scheduled kick and every task at INFO: once a minute, forever.
    if settings.log_level != "DEBUG":
        logging.getLogger("taskiq").setLevel(logging.WARNING)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's text (its type when empty): a failure logged or
    reported stays one line."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
