"""Watching the worker: the supervisor, the worker, restarts, control requests, deadline."""
