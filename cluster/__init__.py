"""geoshard.cluster."""
