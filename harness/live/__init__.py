"""Probing a model while it trains: the core (prober), its schedule and alerts, and the Lightning and Hugging Face
callbacks that drive it."""
