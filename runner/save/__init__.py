"""Saving: the snapshot, the background writer, the saver, and when a save is due."""
