"""Novelty scores (logit and feature-space), the post-hoc threshold grid, and the leaderboard metrics."""
