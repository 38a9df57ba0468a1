"""flowlib: normalizing flows for variational autoencoders, the companion package of
the book "Flows in VAEs". Importing it has no side effects: seeding is explicit,
through :func:`seed_everything`."""

from .training.seeding import seed_everything

__all__ = ["seed_everything"]
__version__ = "0.1.0"
