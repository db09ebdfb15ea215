"""One error hierarchy for Toru; the web tier maps each to its HTTP status.

The supervisor sends these over the control socket as ``{"code", "message", "status",
"retry_after"?}`` and the worker client raises them again, so a plugin timeout in the
supervisor becomes a 504 in the worker without either side knowing the other's internals.
"""

from __future__ import annotations

from typing import Any


class ToruError(Exception):
    """Base error: a machine-readable ``code``, a human ``message`` and an HTTP ``status``."""

    code = "internal_error"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.retry_after is not None:
            d["retry_after"] = self.retry_after
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToruError:
        status = int(d.get("status", 500))
        klass = _BY_STATUS.get(status, ToruError)
        return klass(
            str(d.get("message", "")),
            code=str(d.get("code", klass.code)),
            status=status,
            retry_after=d.get("retry_after"),
        )


class BadRequest(ToruError):
    code, status = "bad_request", 400


class Unauthorized(ToruError):
    code, status = "unauthorized", 401


class Forbidden(ToruError):
    code, status = "forbidden", 403


class NotFound(ToruError):
    code, status = "not_found", 404


class Conflict(ToruError):
    code, status = "conflict", 409


class PayloadTooLarge(ToruError):
    code, status = "payload_too_large", 413


class TooManyRequests(ToruError):
    code, status = "too_many_requests", 429


class BadGateway(ToruError):
    """The plugin died, closed the connection or answered garbage."""

    code, status = "bad_gateway", 502


class Unavailable(ToruError):
    """The plugin is restarting (``retry_after`` set) or the supervisor is unreachable."""

    code, status = "unavailable", 503


class SupervisorUnavailable(Unavailable):
    code = "supervisor_unavailable"


class StoreUnavailable(Unavailable):
    """The database file cannot be used (not a database, damaged, unreadable): one line
    naming the file, for the CLI's exit message and for /healthz."""

    code = "store_unavailable"


class GatewayTimeout(ToruError):
    code, status = "timeout", 504


_BY_STATUS: dict[int, type[ToruError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: TooManyRequests,
    502: BadGateway,
    503: Unavailable,
    504: GatewayTimeout,
}
