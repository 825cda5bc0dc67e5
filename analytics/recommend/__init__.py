"""Recommendations from the group's own history: implicit ALS with a popularity baseline."""
