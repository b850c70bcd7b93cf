"""Images on disk: discovering a dataset's layout, decoding photos, the health scan and its report,
exclusions, stratified splits, torch datasets and loaders.

It may import ``engine.core``; it knows nothing of models, training or the GUI.
"""
