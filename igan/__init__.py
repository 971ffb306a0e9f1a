"""igan: the techniques of "Improved Techniques for Training GANs" (Salimans et al., 2016) in PyTorch.

The library never imports Ray or MLflow; ``pipelines`` runs it on clusters and tracks it.
"""
__version__ = "0.1.0"
