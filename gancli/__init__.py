"""gancli: train, sample, explore and evaluate GANs from the command line."""

__version__ = "0.1.0"
