"""Errors that services raise and the API renders as `{"error": {...}}`."""

from typing import Any


class ServiceError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code


class InvalidInput(ServiceError):
    status = 400
    code = "invalid"

    @classmethod
    def named(cls, field: str, reason: str, *, code: str | None = None) -> "InvalidInput":
        """`field` and why it is refused ("limit", "must be an integer from 1 to 500"): the
        message says it, and `details` names the field, as clients map errors by it."""
        return cls(f"{field} {reason}.", details={field: [reason]}, code=code)


class Forbidden(ServiceError):
    """A refusal with a code of its own (403), audited as every refusal is: the requester
    of a change approving it ("own_request")."""

    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "too_large"


class Unavailable(ServiceError):
    """Nothing can answer now (503); `retry_after` seconds go to the Retry-After header."""

    status = 503
    code = "unavailable"
    retry_after = 60
