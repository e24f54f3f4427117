"""Training: the trial loop and what feeds it."""
