"""geoshard.storage."""
