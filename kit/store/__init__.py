"""What the stages leave in the work folder, and how to read it back: manifests, run folders,
pseudo-label sets and stacks (with their fitted meta-models). Readers (submit, report, predict,
stack selection, tuning) import this package, never the trainer; it imports no torch.
"""

from kit.store.files import read_json, sha256_file, sha256_json
from kit.store.manifests import (
    Manifest,
    PseudoManifest,
    RunManifest,
    StackManifest,
    SubmissionManifest,
    manifest_kind,
)
from kit.store.meta_models import (
    MetaModels,
    meta_model_problem,
    read_meta_models,
    rebuild_command,
    save_meta_models,
    write_meta_models,
)
from kit.store.predictions import SavedPredictions
from kit.store.pseudo import PseudoResult, list_pseudo, load_pseudo, make_pseudo_id, write_pseudo
from kit.store.runs import (
    RUN_FORMAT,
    FoldRecord,
    RunFolder,
    RunResult,
    done_folds,
    list_runs,
    load_run,
    make_run_id,
)
from kit.store.stacks import StackResult, list_stacks, load_stack

__all__ = [
    "RUN_FORMAT",
    "FoldRecord",
    "Manifest",
    "MetaModels",
    "PseudoManifest",
    "PseudoResult",
    "RunFolder",
    "RunManifest",
    "RunResult",
    "SavedPredictions",
    "StackManifest",
    "StackResult",
    "SubmissionManifest",
    "done_folds",
    "list_pseudo",
    "list_runs",
    "list_stacks",
    "load_pseudo",
    "load_run",
    "load_stack",
    "make_pseudo_id",
    "make_run_id",
    "manifest_kind",
    "meta_model_problem",
    "read_json",
    "read_meta_models",
    "rebuild_command",
    "save_meta_models",
    "sha256_file",
    "sha256_json",
    "write_meta_models",
    "write_pseudo",
]
