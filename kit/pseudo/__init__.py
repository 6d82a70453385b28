"""Pseudo-labelling: a teacher (a finished run or stack) fills the keypoints the data lacks.

In facial-keypoints, 70 % of the training rows lack 11 of the 15 keypoints, and the test rows
carry none; the masked loss lets those rows teach only what they have. `make_pseudo_labels`
(`kit pseudo COMP`) writes a set of labels: the truth where present, the teacher's predictions
where it is missing, and the teacher's test predictions (kit.store.pseudo has the layout). A
student is an ordinary run with the train settings ``pseudo=<set id>`` and ``pseudo_weight``:
each fold also trains on its training rows' pseudo labels and on every test row, at that
weight; validation and CV use the true labels only (kit.training.targets.pseudo_targets).

A normal set leaks (a teacher's OOF of one fold came from a model that saw the others); a
strict one (``--strict``) does not, and their difference measures it (kit.pseudo.make).
"""

from kit.pseudo.make import make_pseudo_labels, resolve_teacher
from kit.store.pseudo import PseudoResult, list_pseudo, load_pseudo

__all__ = ["PseudoResult", "list_pseudo", "load_pseudo", "make_pseudo_labels", "resolve_teacher"]
