"""What other apps may react to about decisions, without the sender knowing who listens.

`decisions_recorded` is sent inside the transaction that records new decisions,
with `decisions` ((id, model version, content hash) of each), `predictions` (each
one's, in the same order) and `recorded_at`.
The explanation app listens (explain/receivers.py): it adds their pending work
rows in the same transaction (explanations; counterfactuals of adverse decisions),
so a decision is never stored without them, and sends the work once it commits.

`explanations_stored` is sent by the explanation workers inside the transaction
that stored a batch (its results, or rows that used up their attempts), with
`explanations` (work rows with decision, method, status, quality, error; those
computed by this batch also carry their `outcome`, and their decision its
`prediction`), `explain_settings` (the version's) and `model_version` (the one
the batch is of; None for rows that only used up their attempts). The review
queue listens (reviews/apps.py) and opens cases in the same transaction.
"""

from django.dispatch import Signal

decisions_recorded = Signal()
explanations_stored = Signal()
