"""Offline ranking metrics for recommendations: hit-rate@k, NDCG@k and catalog coverage.

Plain Python over small collected results (one list of at most k tracks per user), so the
definitions are easy to read and to test by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set


def hit_rate_at_k(
    recommended: Mapping[str, Sequence[str]], relevant: Mapping[str, Set[str]], k: int
) -> float:
    """Share of evaluated users with at least one relevant track in their top ``k``.

    Only users with something relevant are evaluated: a user who discovered nothing new in the
    held-out week cannot be hit by any model.
    """
    users = [user for user, tracks in relevant.items() if tracks]
    if not users:
        return 0.0
    hits = sum(1 for user in users if set(recommended.get(user, ())[:k]) & relevant[user])
    return hits / len(users)


def ndcg_at_k(
    recommended: Mapping[str, Sequence[str]], relevant: Mapping[str, Set[str]], k: int
) -> float:
    """Mean normalised discounted cumulative gain at ``k``, with binary relevance."""
    users = [user for user, tracks in relevant.items() if tracks]
    if not users:
        return 0.0
    total = 0.0
    for user in users:
        ranked = recommended.get(user, ())[:k]
        gain = sum(
            1.0 / math.log2(rank + 2)
            for rank, track in enumerate(ranked)
            if track in relevant[user]
        )
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant[user]))))
        total += gain / ideal
    return total / len(users)


def catalog_coverage(recommended: Mapping[str, Sequence[str]], catalog_size: int, k: int) -> float:
    """Share of the recommendable catalog that appears in anyone's top ``k``."""
    if catalog_size == 0:
        return 0.0
    shown = {track for tracks in recommended.values() for track in tracks[:k]}
    return len(shown) / catalog_size
