"""Built-in example jobs. ``digits``: a small CNN on scikit-learn's bundled digits."""
