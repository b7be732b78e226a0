"""A version's decisions per day and score bin, kept as counts so that its page reads a
few hundred rows instead of every decision (1.1 s at 2 million decisions, seconds more at
ten).

The tallies count the served decisions with an id up to a mark, and the page adds the
decisions after the mark, counted as they are (`day_bin_counts`, in one snapshot). The
mark only moves to a sealed decision's id: sealing waits out every writer of a smaller id
(sealing._horizon), so nothing can still arrive below it, and the sum is exact. The
sealing task moves it after each seal (`count_sealed`); retiring a month deletes
decisions, so it drops every tally and the next sealing task counts them again
(`forget`). Erasure keeps a decision's time and score, so it changes nothing here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from datetime import UTC, date, datetime, time

from django.db import transaction
from django.db.models import Count, F, IntegerField, QuerySet, Sum
from django.db.models.functions import Cast, Coalesce, Floor, Least, TruncDate

from auditapp.decisions.models import Decision, Seal, TallyMark, VersionDayTally
from auditapp.registry.models import ModelVersion
from auditapp.snapshots import one_moment

SCORE_BINS = 20  # equal bins over [0, 1]; 1.0 joins the last
NO_SCORE = -1  # the bin of a decision without a score


def score_bin() -> Cast:
    """A score's bin, 0 to SCORE_BINS - 1 for a score in [0, 1] (null without a score)."""
    return Cast(Least(Floor(F("score") * SCORE_BINS), SCORE_BINS - 1), IntegerField())


def _grouped(decisions: QuerySet) -> QuerySet:
    """(version, day, bin, n) of some decisions: the one grouping the tallies and the page's
    uncounted tail share."""
    return (
        decisions.annotate(day=TruncDate("predicted_at"), bin=Coalesce(score_bin(), NO_SCORE))
        .values_list("model_version_id", "day", "bin")
        .annotate(n=Count("id"))
        .order_by()
    )


def day_bin_counts(model_version: ModelVersion) -> list[tuple]:
    """(day, bin, decisions) of a version's served decisions: its tallies, and the decisions
    after the mark counted now, read in one snapshot. A (day, bin) may come twice.

    The mark is read first and given to the count as a number: as a subquery the planner
    could not know how few rows follow it, and compiled the count (JIT) for 30 ms."""
    with one_moment():
        through = _through()
        tallied = list(
            VersionDayTally.objects.filter(model_version=model_version).values_list(
                "day", "bin", "decisions"
            )
        )
        tail = _grouped(
            Decision.objects.served().filter(model_version=model_version, id__gt=through)
        )
        return tallied + [(day, bin_, n) for _, day, bin_, n in tail]


def served_since(model_ids: Collection[int], day: date) -> dict[int, int]:
    """Served decisions per registered model predicted on `day` (UTC) or later: the
    tallies and the decisions after the mark, in one snapshot (the overview's "decisions
    today", which had counted every decision of the day: 0.6 s at 1.7 million)."""
    counts: Counter = Counter()
    with one_moment():
        through = _through()
        tallied = (
            VersionDayTally.objects.filter(
                model_version__registered_model__in=model_ids, day__gte=day
            )
            .values_list("model_version__registered_model")
            .annotate(n=Sum("decisions"))
            .values_list("model_version__registered_model", "n")
            .order_by()
        )
        tail = (
            Decision.objects.served()
            .filter(
                registered_model__in=model_ids,
                predicted_at__gte=datetime.combine(day, time.min, tzinfo=UTC),
                id__gt=through,
            )
            .values_list("registered_model")
            .annotate(n=Count("id"))
            .values_list("registered_model", "n")
            .order_by()
        )
        for model_id, n in [*tallied, *tail]:
            counts[model_id] += n
    return dict(counts)


def _through() -> int:
    """The mark, read as a number (see day_bin_counts)."""
    return TallyMark.objects.filter(pk=1).values_list("through_id", flat=True).first() or 0


def served_decisions(model_version: ModelVersion) -> int:
    """How many decisions of the version someone was told (shadows never are)."""
    return sum(n for _, _, n in day_bin_counts(model_version))


def count_sealed() -> int:
    """Count the decisions sealed since the mark (the sealing task, after each seal)."""
    return count_through(
        Seal.objects.exclude(last_decision_id=None)
        .order_by("-index")
        .values_list("last_decision_id", flat=True)
        .first()
    )


def count_through(through_id: int | None) -> int:
    """Add the served decisions after the mark, up to `through_id` (sealed), to the tallies,
    and move the mark there. Returns how many groups changed.

    The mark moves first, by a conditional UPDATE: of two callers at once, one moves it
    and counts; the other finds it moved and counts nothing (no range is counted twice).
    """
    if not through_id:
        return 0
    with transaction.atomic():
        mark, _ = TallyMark.objects.get_or_create(pk=1)
        start = mark.through_id
        if through_id <= start:
            return 0
        if not TallyMark.objects.filter(pk=1, through_id=start).update(through_id=through_id):
            return 0
        added = {
            (version, day, bin_): n
            for version, day, bin_, n in _grouped(
                Decision.objects.served().filter(id__gt=start, id__lte=through_id)
            )
        }
        if not added:
            return 0
        versions = {version for version, _, _ in added}
        days = {day for _, day, _ in added}
        for row in VersionDayTally.objects.filter(model_version_id__in=versions, day__in=days):
            key = (row.model_version_id, row.day, row.bin)
            if key in added:
                added[key] += row.decisions
        VersionDayTally.objects.bulk_create(
            [
                VersionDayTally(model_version_id=version, day=day, bin=bin_, decisions=n)
                for (version, day, bin_), n in added.items()
            ],
            update_conflicts=True,
            unique_fields=["model_version", "day", "bin"],
            update_fields=["decisions"],
        )
        return len(added)


def forget() -> None:
    """Drop every tally (decisions were deleted): the page counts every decision until the
    next seal counts them again."""
    with transaction.atomic():
        # The mark first: its row lock waits out a count in flight, whose tallies the
        # delete then sees.
        TallyMark.objects.filter(pk=1).update(through_id=0)
        VersionDayTally.objects.all().delete()
