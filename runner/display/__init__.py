"""What the person watching sees: console messages, progress bars, the status line."""
