"""The book's helpers: what the chapters need to find their files (:mod:`.paths`, :mod:`.colab`),
draw their figures (:mod:`.style`, :mod:`.plotting`, :mod:`.plotting_jacobian`, :mod:`.widgets`)
and set and grade their exercises (:mod:`.exercises`, :mod:`.coursework`). The library (flows,
model, data, training, twod) never imports this package."""
