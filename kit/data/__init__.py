"""Data layer: readers' common container, cache, unpacking, EDA, folds, synthetic faces."""
