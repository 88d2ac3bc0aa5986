"""fmae: feed-forward autoencoders on Fashion-MNIST, from the command line."""

__version__ = "0.1.0"
