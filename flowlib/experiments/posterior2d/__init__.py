r"""The experiment behind the chapter "Looking at the posterior": VAEs with a two-dimensional latent
space on statically binarized MNIST, where the true posterior can be computed on a grid
(:mod:`flowlib.twod.posterior_grid`)::

    python -m flowlib posterior2d --out results/posterior2d --runs runs/posterior2d --threads 1

(also ``python -m flowlib.experiments.posterior2d run ...``). One protocol (:mod:`.protocol`), seed 0,
four stages, each resumable (:func:`~.run.run`):

A. **Joint training** (:func:`flowlib.training.loop.train`) of two VAEs: no flow (the *base*), and a
   *static* planar flow (the sampling experiment).
B. **Amortized approximations of one posterior** (:mod:`.approximations`). The base decoder and the
   encoder's hidden layers are frozen; for each family of :data:`~.protocol.FAMILIES` the Gaussian
   output layer (started from the base's) and an amortized flow on the encoder's features, acting on
   the whitened noise (:class:`~flowlib.model.whitened.WhitenedFlowVAE`), are trained to maximise the
   ELBO. With the decoder fixed, ``log p(x)`` is fixed and the ELBO gain is exactly a drop of the mean
   ``KL(q || p(z | x))``: every column of the chapter targets the same true posterior.
C. **Per-digit fits** (:mod:`.fit`): for the chosen test digits, a static flow of each family (then a
   diagonal affine map, :class:`flowlib.flows.DiagonalAffine`) is fitted to that one posterior by
   reverse KL (:func:`flowlib.twod.fit.fit_reverse_kl`), started at the posterior's mode on the
   coarse grid: no amortization, the family's own limit (near that mode: reverse KL does not jump
   between modes).
D. **Evaluation** (:mod:`.report`): grid evidence and KLs on 500 random test digits, the chosen
   digits' grid and Monte Carlo KLs, and the static flow's effect on the aggregate posterior and on
   prior samples.

Results go to ``--out`` (small checkpoints, ``metrics.json``, ``aggregate.npz``), loaded by
:func:`~.models.load_results`; runs go to ``--runs``. The modules: :mod:`.protocol` (the settings),
:mod:`.data` (test labels), :mod:`.models` (the models and loading the results),
:mod:`.approximations` (B), :mod:`.fit` (C), :mod:`.report` (D), :mod:`.run` (all stages),
:mod:`.cli` (the command line).
"""

from .approximations import train_approximation
from .cli import add_arguments, handle, main
from .data import binarized_test_labels
from .fit import fit_digit
from .models import load_results
from .protocol import APPROX, EVAL, FAMILIES, FIT, JOINT, PROTOCOL, R99, STORED_GRIDS
from .report import digit_box, digit_report, sampling_report
from .run import run

__all__ = ["PROTOCOL", "JOINT", "FAMILIES", "APPROX", "FIT", "EVAL", "STORED_GRIDS", "R99",
           "binarized_test_labels", "load_results", "train_approximation", "fit_digit", "digit_box",
           "digit_report", "sampling_report", "run", "main", "add_arguments", "handle"]
