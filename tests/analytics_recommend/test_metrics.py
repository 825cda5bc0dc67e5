"""The offline metrics, checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from analytics.recommend.metrics import catalog_coverage, hit_rate_at_k, ndcg_at_k


def test_hit_rate_counts_users_with_any_relevant_track_in_the_top_k() -> None:
    recommended = {"a": ["x", "y", "z"], "b": ["x"], "c": ["q"]}
    relevant = {"a": {"z"}, "b": {"y"}, "c": set()}
    assert hit_rate_at_k(recommended, relevant, k=3) == 0.5  # c has nothing to find
    assert hit_rate_at_k(recommended, relevant, k=2) == 0.0


def test_ndcg_rewards_relevant_tracks_ranked_higher() -> None:
    relevant = {"a": {"y"}}
    first = ndcg_at_k({"a": ["y", "x"]}, relevant, k=2)
    second = ndcg_at_k({"a": ["x", "y"]}, relevant, k=2)
    assert first == 1.0
    assert second == pytest.approx(1 / math.log2(3))


def test_ndcg_normalises_by_the_ideal_ranking() -> None:
    relevant = {"a": {"x", "y", "z"}}
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at_k({"a": ["x", "q"]}, relevant, k=2) == pytest.approx(1 / ideal)


def test_coverage_is_the_share_of_the_catalog_shown() -> None:
    assert catalog_coverage({"a": ["x", "y"], "b": ["y", "z"]}, catalog_size=10, k=2) == 0.3
    assert catalog_coverage({}, catalog_size=0, k=2) == 0.0
