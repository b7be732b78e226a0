"""Signals the registry sends to the apps above it (it never imports them)."""

from django.dispatch import Signal

# Sent while a new version is checked, before anything is stored, with `model`
# (the loaded artifact), `schema`, `background` (a DataFrame or None), `rows`
# (raw input dicts to try: the background's, else the schema's probe rows),
# `background_sha256`, `artifact_sha256` and `settings` (the version's
# explain_settings). A receiver returns a dict of figures, recorded under its
# `key` in the version's `self_test`, or raises InvalidInput to refuse the version.
version_checking = Signal()
