"""Training engine: batched on-device augmentation, the loop, OOF/test prediction, run folders.

    from kit.training.runs import train_run, load_run, list_runs
    result = train_run(comp, "resnet", {"lr": 3e-4}, folds=None, target_set="masked")
    result.oof, result.test, result.manifest["cv"]["overall"]

Modules: augment (batched augmentation), loop (one model on one fold), predict (batched
prediction + flip TTA), targets (target sets, keypoint subsets, linear imputation), runs
(content-addressed K-fold runs with resume), plots (learning curves, worst OOF sheet).
"""
