"""The protocol of the 2-D posterior experiment, seed 0: the settings of each stage (stored in
``metrics.json`` under ``protocol`` by :func:`~.run.run`)."""

from __future__ import annotations

import math

__all__ = ["PROTOCOL", "JOINT", "FAMILIES", "APPROX", "FIT", "EVAL", "STORED_GRIDS", "R99"]

# Stage A: every jointly trained VAE (flowlib.training.loop config keys).
PROTOCOL = {
    "data": "binarized-mnist", "binarize": "static", "latent_dim": 2, "hidden": [200, 200], "arch": "mlp",
    "batch_size": 100, "optimizer": "adam", "lr": 1e-3, "warmup": 5, "epochs": 20, "patience": 20,
    "seed": 0, "subset": None,
}
JOINT = {"base": ("none", 0, True), "static-planar": ("planar", 8, False)}
# Stage B: decoder and encoder trunk frozen; heads + amortized flow; beta = 1.
FAMILIES = {"gaussian": ("none", 0), "planar": ("planar", 8), "radial": ("radial", 8),
            "iaf": ("iaf", 4), "pcpmap": ("pcpmap", 1)}
APPROX = {"epochs": 3, "lr": 1e-3, "batch_size": 100, "iaf_hidden": 64}
# Stage C: reverse-KL fits of one posterior each.
FIT = {"steps": 300, "batch_size": 64, "lr": 5e-3}
# Stage D.
EVAL = {"screen": 500, "random_digits": 3, "non_gaussian_digits": 2, "misplaced_digits": 2,
        "coarse_lim": 5.5, "coarse_n": 440,
        "fine_n": 160, "box_samples": 2000, "mc_samples": 5000, "screen_mc_samples": 32,
        "is_samples": 5000, "aggregate_lim": 5.5, "aggregate_n": 400, "aggregate_block": 4}
# log q on the digits' grids is stored for these families (their inverse is a slow Newton solve)
STORED_GRIDS = ("pcpmap",)
R99 = math.sqrt(-2 * math.log(0.01))  # the radius holding 99% of N(0, I_2): ||z||^2 ~ chi^2_2
