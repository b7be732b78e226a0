"""What other apps may react to about decisions, without the sender knowing who listens.

`explanations_stored` is sent by the explanation workers inside the transaction
that stored a batch (its results, or rows that used up their attempts), with
`explanations` (work rows with decision, method, status, quality, error) and
`explain_settings` (the version's). The review queue listens (reviews/apps.py)
and opens cases in the same transaction.

`explanations_pending` is sent after the transaction that recorded decisions (or
asked for their explanations again) commits, with `pending` (decision ids by
(model version id, method)) and `priority` (a request waiting: its own queue and
a new seed). The explanation app listens (explain/receivers.py) and sends the work.
"""

from django.dispatch import Signal

explanations_stored = Signal()
explanations_pending = Signal()
