"""Tools for two-dimensional densities (part II and chapter 11): the target energies
(:mod:`.densities`), evaluation grids (:mod:`.grid`), Jacobians (:mod:`.jacobian`), fitting a flow
by reverse KL (:mod:`.fit`) and a VAE's true posterior on a grid (:mod:`.posterior_grid`)."""
