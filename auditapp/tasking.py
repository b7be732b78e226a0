"""The base of every Celery task: what a transient error, a retry and a final failure do.

A task names its base, its wire contract (name, limits) and, if a failure must be
seen by someone, the hook that writes it:

    @shared_task(base=AttestTask, name="reports.generate", on_final_failure=_failed, ...)

Transient errors (the database or the broker away) are retried with exponential
backoff, `retry_backoff` seconds doubled each time up to `retry_backoff_max`, at
most `max_retries` times (options of the decorator, as Celery names them). Once
the retries are used up, or on any other error, the task gives up: one log line
(`task.retry` / `task.failed`) and `on_final_failure(exc, args, kwargs)`, which
writes the failure where its user looks (a report, a snapshot, an alert) and
returns the task's result. Without a hook the error stands and the task fails:
what it left behind is picked up by its own recovery (the explanation sweeper,
the next beat).
"""

from __future__ import annotations

import inspect
import logging

import kombu.exceptions
import psycopg
import redis.exceptions
from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from celery.utils.time import get_exponential_backoff_interval
from django.db import InterfaceError, OperationalError

log = logging.getLogger(__name__)

DATABASE_ERRORS = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,  # raw driver connections (verification's readers)
    psycopg.InterfaceError,
)
BROKER_ERRORS = (kombu.exceptions.OperationalError,)
CACHE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Errors that another try, a little later, may not meet: the service is away. Tasks
# retry them; a request that meets one gets 503 with Retry-After (web/outage.py).
TRANSIENT_ERRORS = DATABASE_ERRORS + BROKER_ERRORS + CACHE_ERRORS


class AttestTask(Task):
    """Retries transient errors, then gives up once: a log line and `on_final_failure`."""

    transient_errors: tuple[type[BaseException], ...] = TRANSIENT_ERRORS
    max_retries = 3
    retry_backoff = 5  # seconds before the first retry, doubled for each next one
    retry_backoff_max = 300
    retry_jitter = False  # True spreads a crowd of retries over [0, backoff]

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except (Retry, Ignore, Reject):
            raise  # Celery's own signals, not failures
        except self.transient_errors as exc:
            retries = self.request.retries
            if retries < self.max_retries:
                countdown = get_exponential_backoff_interval(
                    self.retry_backoff, retries, self.retry_backoff_max, self.retry_jitter
                )
                log.warning(
                    "task.retry task=%s id=%s retries=%d countdown=%d error=%s",
                    self.name,
                    self.request.id,
                    retries,
                    countdown,
                    describe(exc),
                )
                raise self.retry(exc=exc, countdown=countdown) from exc
            return self._give_up(exc, args, kwargs)
        except Exception as exc:
            return self._give_up(exc, args, kwargs)

    def _give_up(self, exc: Exception, args, kwargs):
        log.error(
            "task.failed task=%s id=%s retries=%d error=%s",
            self.name,
            self.request.id,
            self.request.retries,
            describe(exc),
            exc_info=exc,
        )
        return self.on_final_failure(exc, args, kwargs)

    def on_final_failure(self, exc: Exception, args, kwargs):
        """Write the failure for its user; return the task's result. By default: fail."""
        raise exc

    def arguments(self, args, kwargs) -> dict:
        """The task's arguments by name, however it was sent (for a hook)."""
        return inspect.signature(self.run).bind(*args, **kwargs).arguments


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
