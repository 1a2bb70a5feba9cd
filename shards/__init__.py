"""geoshard.shards."""
