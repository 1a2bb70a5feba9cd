"""geoshard.regions."""
