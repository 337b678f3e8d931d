"""poisoncure — the library under the companion book to *Poison as a Cure* (Chan & Ong, 2019).

One concept per module; notebooks import this package as ``pc`` and stay thin:

=================  ==========================================================================
``data``           CIFAR-10 from an explicit path, the standard batches, the offline archive or
                   torchvision's downloader; cached uint8 arrays; class-balanced subsets
``attacks``        pure trigger functions (pixel, patch, blend) and :func:`attacks.poison`
``models``         small fast CNN, CIFAR ResNet-18 and VGG-19, normalisation inside the model
``train``          :func:`train.fit` and :func:`train.evaluate` (clean accuracy, attack success)
``cache``          artifact store keyed by a hash of the full config; atomic, verified
``gradients``      per-sample input gradients, one backward pass per batch
``signal``         the paper's maths: signal extraction, PC1 scores, GMM filter, target and base class
``metrics``        accuracy, attack success, sensitivity, specificity — evaluation lives only here
``experiments``    the shared objects of the book (poisoned models per profile), cached
``profiles``       named parameter sets (``smoke``, ``full``) for papermill
``toy``            the Gaussian toy model of the paper's Appendix A (chapter 1)
``plots``          figure style and image helpers (no computation)
``provenance``     commit, device, versions, wall time for every number
``book``           the build: Jupytext -> papermill -> Jupyter Book
=================  ==========================================================================
"""

__version__ = "0.1.0"
