"""Interactive figures for the chapters (ipywidgets). One module per topic.

Every widget is a thin layer over a plain plotting function that the chapter
also calls once, so the static HTML page shows a rendered figure too.
"""
