"""geoshard.sim."""
