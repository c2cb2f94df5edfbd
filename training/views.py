"""Training pages: launch a round, watch its stages, cancel it."""
