"""Data-parallel training: the ranks of a job, the processes that run them, and the group
they train in (docs/concepts.md#several-processes)."""
