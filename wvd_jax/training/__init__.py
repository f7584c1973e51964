"""Training: sharding, train state, optimizer, checkpoints, metrics and the train loop."""
