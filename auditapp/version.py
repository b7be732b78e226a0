"""Attest's version, which reports and notices name (a module of its own: importing the
package `auditapp` loads the Celery app)."""

__version__ = "0.1.0"
