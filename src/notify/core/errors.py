"""Error shapes and handlers: bad input is 4xx naming the field, a failing dependency is 503."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from notify.core.logs import one_line

log = logging.getLogger("notify.errors")


class NotFound(HTTPException):
    status_code = 404


class Conflict(HTTPException):
    status_code = 409


class Invalid(HTTPException):
    """422 naming the offending field in `extra`."""

    status_code = 422

    def __init__(self, key: str, message: str) -> None:
        super().__init__(detail=f"{key}: {message}", extra=[{"key": key, "message": message}])


def _unavailable(what: str, exc: Exception, request: Request[Any, Any, Any]) -> Response[Any]:
    log.error(
        "%s unavailable during %s %s: %s",
        what,
        request.method,
        request.url.path,
        one_line(exc),
    )
    return Response(
        {"status_code": 503, "detail": f"{what} unavailable, try again later", "extra": {}},
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
    )


def database_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, DataError):  # a value the database refuses: the caller's input
        return Response(
            {
                "status_code": 400,
                "detail": "a value is not acceptable to the "
                "database (check for invalid characters)",
                "extra": {},
            },
            status_code=400,
        )
    if (
        isinstance(exc, DBAPIError)
        and not isinstance(exc, OperationalError)
        and not exc.connection_invalidated
    ):
        log.exception("database error during %s %s", request.method, request.url.path)
        return Response(
            {"status_code": 500, "detail": "Internal Server Error", "extra": {}}, status_code=500
        )
    return _unavailable("database", exc, request)


def connection_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # Requests do no network I/O but the database's (NATS is behind the outbox).
    return _unavailable("database", exc, request)


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's error shape, with `extra` always present as the contract promises."""
    extra = exc.extra if exc.extra is not None else {}
    body = {"status_code": exc.status_code, "detail": exc.detail, "extra": extra}
    return Response(body, status_code=exc.status_code, headers=exc.headers)


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error during %s %s", request.method, request.url.path)
    return Response(
        {"status_code": 500, "detail": "Internal Server Error", "extra": {}}, status_code=500
    )


exception_handlers: ExceptionHandlersMap = {
    Exception: internal_error,
    HTTPException: http_error,
    OperationalError: database_error,
    DBAPIError: database_error,
    PoolTimeout: database_error,
    ConnectionError: connection_error,
    OSError: connection_error,
}
