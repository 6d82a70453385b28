"""`kit stack` as a library call: a meta-learner per keypoint coordinate over the runs' OOF.

Inputs are finished runs (kit.training.runs): their OOF predictions (every row predicted by the
fold model that did not train on it) and their fold-averaged test predictions. For each
coordinate (keypoint k, axis x or y) the candidates are:

- the **best single model** as it stands (the base run with the best CV under the metric,
  among those predicting every stacked keypoint), its OOF and test predictions unchanged;
- each base model that predicts k, and their **mean blend** (in the table only);
- a **ridge stack**: intercept + non-negative weights on the base predictions, shrunk towards
  the mean blend's equal weights (the penalty chosen per fit by leave-one-out error);
- a **LightGBM stack**: gradient-boosted trees that start from the ridge stack's prediction
  (LightGBM's ``init_score``) and learn only the non-linear correction. Trees fitting a
  near-linear blend from scratch would waste their splits on it; boosting from the ridge anchor
  lets them spend the splits on what ridge cannot do. The anchor of a training row is itself
  out-of-fold (inner folds), so the trees never see a residual that ridge fitted in-sample.

Every meta-model is scored by nested cross-validation on THE shared folds file: the meta-model
that predicts the rows of fold f is trained only on rows of the other folds
(`check_meta_rows` asserts it at every fit). A coordinate missing in a row is left out of that
coordinate's fits and scores only. The method used per keypoint is picked by CV among the best
single model, ridge and LightGBM (simplest first; kit.stack.picking): for the nested score the
pick for fold f, the best single model included, uses the other folds' rows only, and the test
predictions use the pick over all rows. So the stack's CV is not worse than the best single
model's, up to nested-CV noise. Test predictions average the fold meta-models, as the runs do.

Artifacts (content-addressed like runs) go to ``comp.workspace.stacks/<stack-id>/``:
manifest.json, oof.npy and test.npy (picked method; columns = manifest.keypoint_indices),
candidates.npz (every method's OOF and test arrays), table.csv (the comparison table), and
meta/ (the fitted meta-models: LightGBM's model files, the ridge fits, the picks; their sha256
in the manifest, kit.store.meta_models), which `kit predict` loads instead of fitting again.

Modules (the algorithms have no file access; `stack` wraps them with storage, as AutoGluon's
ensemble model wraps `EnsembleSelection`): nested (the honesty check), bases (base models),
ridge, features, boosting (LightGBM per coordinate with nested CV), picking (per-keypoint pick,
comparison table), meta (`stack_predictions`: the algorithm on arrays), fitted (the fitted
meta-models as a plain object, exported to plain data and back), selection (which runs), store
(`stack`, `load_stack`, `list_stacks`: folders and manifests).
"""

from kit.stack.bases import BaseModel
from kit.stack.boosting import LIGHTGBM_DEFAULTS, StackSettings, stack_coordinate
from kit.stack.features import FEATURE_SETS
from kit.stack.meta import StackOutcome, stack_predictions
from kit.stack.nested import MIN_META_ROWS, MetaLeakError, check_meta_rows, fold_rows
from kit.stack.picking import BLEND, LIGHTGBM, PICKED, RIDGE
from kit.stack.ridge import fit_ridge
from kit.stack.selection import run_group, select_runs
from kit.stack.store import STACK_FORMAT, stack
from kit.store.stacks import StackResult, list_stacks, load_stack

__all__ = [
    "BLEND",
    "FEATURE_SETS",
    "LIGHTGBM",
    "LIGHTGBM_DEFAULTS",
    "MIN_META_ROWS",
    "PICKED",
    "RIDGE",
    "STACK_FORMAT",
    "BaseModel",
    "MetaLeakError",
    "StackOutcome",
    "StackResult",
    "StackSettings",
    "check_meta_rows",
    "fit_ridge",
    "fold_rows",
    "list_stacks",
    "load_stack",
    "run_group",
    "select_runs",
    "stack",
    "stack_coordinate",
    "stack_predictions",
]
