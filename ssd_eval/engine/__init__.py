"""Layer 4: running an evaluation: pipeline, resume cache, provenance, shards, launcher, finish, bench."""
