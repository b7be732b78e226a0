"""Every API error is `{"error": {"code", "message", "details"}}`; every 403 is audited."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from auditapp.accounts.audit import client_ip, record_event
from auditapp.accounts.roles import actor_for
from auditapp.errors import Forbidden, ServiceError


def error_body(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


def record_denial(request, reason: str) -> None:
    """Audit a refused request (403)."""
    actor = actor_for(request)
    record_event(
        "access.denied",
        actor=actor if request.user.is_authenticated else None,
        ip=client_ip(request),
        path=request.path,
        method=request.method,
        reason=reason,
    )


def exception_handler(exc, context):
    request = context.get("request")
    if isinstance(exc, ServiceError):
        if isinstance(exc, Forbidden) and request is not None:
            record_denial(request, exc.message)
        response = Response(error_body(exc.code, exc.message, exc.details), status=exc.status)
        if retry_after := getattr(exc, "retry_after", None):
            response["Retry-After"] = str(retry_after)
        return response
    if isinstance(exc, DjangoPermissionDenied | exceptions.PermissionDenied):
        message = str(exc) or "You do not have permission to do this."
        if request is not None:
            record_denial(request, message)
        return Response(error_body("forbidden", message), status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, Http404):
        return Response(error_body("not_found", str(exc) or "Not found."), status=404)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        body = error_body("invalid", "The request is invalid.", response.data)
    elif isinstance(exc, exceptions.ParseError):
        body = error_body("invalid_json", str(exc.detail))
    else:
        code = getattr(exc, "default_code", "error")
        body = error_body(code, str(getattr(exc, "detail", exc)))
    response.data = body
    return response
