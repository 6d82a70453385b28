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
spec (`RunSpec`: the one description of a run), runs (open, assemble and finish a
content-addressed K-fold run with resume; `run_identity`), queue (the one fold queue, over an
in-process or a `FoldPool` executor: parallel), fold (one fold's training -> `FoldRecord`),
checkpoint (the .pt format, written and read here; a fold's predictions for new images), plots
(learning curves, worst OOF sheet). What a run leaves behind is read back through kit.store.
"""
