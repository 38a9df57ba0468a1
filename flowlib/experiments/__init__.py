"""The book's experiments, each a driver above the library: the MNIST tables (:mod:`.tables`,
``python -m flowlib.experiments run|table|status EXPERIMENT_DIR``), Rezende & Mohamed's Figure 3
(:mod:`.figure3`), the 2-D fits of part II (:mod:`.fits2d`) and the 2-D posteriors of chapter 11
(:mod:`.posterior2d`). Their protocols (row files, settings) live in the repository's
``experiments/`` folder."""
