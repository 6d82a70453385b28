"""Training engine: batched on-device augmentation, the loop, OOF/test prediction, run folders.

    from kit.training.runs import train_run
    from kit.store import list_runs, load_run  # what a finished run left, read back

    result = train_run(comp, "resnet", {"lr": 3e-4}, folds=None, target_set="masked")
    result.oof, result.test, result.manifest.cv["overall"]

Modules: config (a run's settings, `--set` parsing), device (device, CPU threads, device
tensors), optim (optimisers and schedules as lookup tables), speed (channels_last, precision,
compile), augment (batched augmentation), flip (left/right permutations), loop (the Trainer: one
model on one fold), predict (batched prediction + flip TTA), targets (target sets, keypoint
subsets, linear imputation), sources (one head per label source: row routing, widened labels),
runs (content-addressed K-fold runs with resume), plots (learning curves, worst OOF sheet).
"""
