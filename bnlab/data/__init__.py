"""Data sets: one module per family of files (cifar10, idx for MNIST and Fashion-MNIST), the
registry a spec names them from (datasets), and their prepared, memory-mapped copies (prepared)."""
