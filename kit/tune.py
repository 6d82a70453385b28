"""`kit tune` as a library call; the code lives in the kit.tuning package (its docstring says
how studies, pruning, storage and workers work).

    from kit.tune import tune
    result = tune(comp, ["sp", "resnet"], trials=30, best_n=2)
    result.best_runs["resnet"][0].oof, result.table
"""

from kit.tuning import *  # noqa: F403  (the package's __all__: tune, TuneResult, ...)
