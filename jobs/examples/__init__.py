"""Built-in example jobs, each a module with ``train(run)`` and a YAML spec beside it.

``digits``: a small CNN on scikit-learn's bundled 8x8 digits (no data to fetch).
The seeds' workloads, reading standard files from ``params.data_dir`` (on Colab a
Drive folder), never downloading:

* ``mnist``: PyTorch's MNIST example on the idx files;
* ``cifar10``: the seed's CIFAR-10 CNN on the binary batches (never the pickles);
* ``cats_dogs``: the cats-vs-dogs classifier on ``train/``/``validation/`` image folders.

``datasets`` holds their file readers.
"""
