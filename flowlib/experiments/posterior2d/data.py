"""The experiment's data beyond the training splits: the class labels of the binarized-MNIST test
images."""

from __future__ import annotations

import torch

from ...data import load

__all__ = ["binarized_test_labels"]


def binarized_test_labels(check: int = 200) -> torch.Tensor:
    """Class labels of the binarized-MNIST test images, which the Larochelle & Murray file lacks.

    The file holds the MNIST test images sorted by class (its class blocks have exactly the sizes
    of MNIST's test classes), so image ``i`` gets the class of its block. ``check`` random images
    are matched to their most likely grey MNIST test image (Bernoulli likelihood) to confirm it."""
    xb, _ = load("binarized-mnist", "test")
    xm, y = load("mnist", "test")
    labels = torch.repeat_interleave(torch.arange(10), torch.bincount(y, minlength=10))
    if check:
        idx = torch.randperm(len(xb), generator=torch.Generator().manual_seed(0))[:check]
        p = xm.clamp(1e-3, 1 - 1e-3)
        match = (xb[idx] @ p.log().T + (1 - xb[idx]) @ torch.log1p(-p).T).argmax(1)
        wrong = (y[match] != labels[idx]).sum().item()
        if wrong:
            raise RuntimeError(f"binarized_test_labels: {wrong} of {check} checked images are not in the "
                               "class block expected from a class-sorted MNIST test set")
    return labels
