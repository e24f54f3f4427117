"""Novelty scores (logit and feature-space), the post-hoc threshold grid, and the leaderboard metrics.
Importing the package imports the modules whose `@register_score` decorators fill the score
registry (hiertune.novelty.registry), which itself imports none."""

from hiertune.novelty import builtin_scores  # noqa: F401
