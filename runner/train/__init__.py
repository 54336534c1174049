"""Inside the worker: the run handle, its data and RNG positions, the resume plan, metrics."""
