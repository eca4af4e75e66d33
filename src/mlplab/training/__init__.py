"""Training around the engine: the loop, schedules, checkpoints, the Model, metrics and run
configurations."""
