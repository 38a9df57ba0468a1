"""Training flow VAEs: the loop and evaluation (:mod:`.loop`), atomic checkpoints
(:mod:`.checkpoint`), what a result records about where it came from (:mod:`.records`) and seeding
(:mod:`.seeding`). Part of the library: it never imports :mod:`flowlib.experiments` or
:mod:`flowlib.book`."""
