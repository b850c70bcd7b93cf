"""The data doctor: label issues, near-duplicates, outliers and confusable classes, found from cached features.

It may import ``engine.core``, ``engine.data``, ``augment`` and ``engine.models``; nothing of training,
search, evaluation or export. The model-free findings work on plain arrays, so each can be tested apart.
Nothing is imported here: ``finding``, ``decisions`` and ``folder_moves`` serve the GUI without torch,
cleanlab or scikit-learn, which ``findings`` (``review_dataset``) and its helpers load.
"""
