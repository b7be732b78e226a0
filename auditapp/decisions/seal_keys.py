"""The log's signing keys as the API shows them: every key, and the seals each signed.

An auditor who keeps the public keys needs to know which key to expect on
which seals; a key rotation shows as one key's range of tree sizes ending where
the next one's begins (README: rotating the signing key).
"""

from __future__ import annotations

from typing import Any

from django.core.cache import cache
from django.db.models import Count, Max, Min

from auditapp.decisions import signing
from auditapp.decisions.models import Seal

RANGES_CACHE_KEY = "seal-key-ranges:v1"


def public_keys_document() -> dict[str, Any]:
    """What GET /api/v1/audit/public-key answers: the current key, and every known key.

    The top-level fields are the current key's, as before keys rotated; `keys`
    lists the retired keys oldest first, then the current one, each with the
    tree sizes of the first and last seals it signed (null: none yet).
    """
    known = signing.known_keys()
    ranges = key_ranges()
    current = next(key for key in known.values() if key.current)
    listed = []
    for key in known.values():
        signed = ranges.get(key.key_id, {})
        listed.append(
            {
                **signing.public_key_document(key.public_key),
                "current": key.current,
                "first_tree_size": signed.get("first"),
                "last_tree_size": signed.get("last"),
                "seals": signed.get("seals", 0),
            }
        )
    return {**signing.public_key_document(current.public_key), "keys": listed}


def key_ranges() -> dict[str, dict[str, int]]:
    """Per key_id: the tree sizes of the first and last seals it signed, and how many it signed.

    Seals are only ever appended, so the answer is cached with the seal it reached
    (its tree size and signature) and extended by the seals after it, an index
    range on tree_size, instead of reading every seal for each request.
    """
    cached = cache.get(RANGES_CACHE_KEY)
    ranges: dict[str, dict[str, int]] = {}
    after = 0
    if cached and _still_the_log(cached["tree_size"], cached["signature"]):
        ranges, after = cached["ranges"], cached["tree_size"]
    newest = (
        Seal.objects.filter(tree_size__gt=after)
        .order_by("-tree_size")
        .values_list("tree_size", "signature")
        .first()
    )
    if newest is None:
        return ranges
    rows = (
        Seal.objects.filter(tree_size__gt=after, tree_size__lte=newest[0])
        .order_by()
        .values("key_id")
        .annotate(first=Min("tree_size"), last=Max("tree_size"), seals=Count("pk"))
    )
    for row in rows:
        known = ranges.setdefault(row["key_id"], {"first": row["first"], "seals": 0})
        known["last"] = row["last"]
        known["seals"] += row["seals"]
    cache.set(
        RANGES_CACHE_KEY,
        {"tree_size": newest[0], "signature": newest[1], "ranges": ranges},
        timeout=None,
    )
    return ranges


def _still_the_log(tree_size: int, signature: str) -> bool:
    """Whether the seal the cached ranges reached is still this database's (not another's)."""
    return Seal.objects.filter(tree_size=tree_size, signature=signature).exists()
