"""A classifier's classes and its teacher's output columns: ``classes_``
from y (or the classes the teacher names), the permutation that puts the
teacher's columns in the order of ``classes_``, and the check that refuses a
torch teacher whose columns are clearly in another order."""

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.frozen import FrozenEstimator
from sklearn.utils.multiclass import check_classification_targets

from .streaming import TeacherColumns


def preview(labels, n=10):
    """At most ``n`` labels of ``labels``, for an error message."""
    labels = list(np.asarray(labels).tolist())
    if len(labels) <= n:
        return repr(labels)
    return repr(labels[:n])[:-1] + f", ... ({len(labels)} in all)]"


def declared_name(baseline):
    return "classes" if hasattr(baseline, "record") else "classes_"


def declared_classes(baseline):
    """The class of each of the teacher's output columns, in column order,
    when the teacher names them (``TorchBaseline(classes=...)``, or a
    fitted scikit-learn MLP's ``classes_``), else None."""
    if isinstance(baseline, FrozenEstimator):
        classes = getattr(baseline.estimator, "classes_", None)
        return None if classes is None else np.asarray(classes)
    if not hasattr(baseline, "record"):
        return None  # an MLP trained here, on y: its classes are classes_
    classes = getattr(baseline, "classes", None)
    if classes is None:
        return None
    classes = np.asarray(classes)
    if classes.ndim != 1 or len(classes) < 2:
        raise ValueError(
            "TorchBaseline classes must be a 1-D list of the class label of "
            "each of the module's output columns, in column order (at least "
            "2; for a single logit: the negative class, then the positive one); "
            f"got {classes.tolist()!r}.")
    unique, counts = np.unique(classes, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(
            f"TorchBaseline classes has duplicate labels "
            f"{preview(unique[counts > 1])}: each of the module's output "
            "columns must have a class of its own.")
    return classes


def classes_of(y, baseline):
    """``classes_`` from the labels y, at least two of them; the sorted
    classes of the teacher's output columns when it names them (every
    label of y must be one of them)."""
    check_classification_targets(y)
    seen = np.unique(y)
    if len(seen) < 2:
        raise ValueError(f"y must contain at least 2 classes; got 1 class "
                         f"({seen[0]!r}).")
    declared = declared_classes(baseline)
    if declared is None:
        return seen
    classes = np.unique(declared)
    known = set(classes.tolist())
    unknown = [label for label in seen.tolist() if label not in known]
    if unknown:
        raise ValueError(
            f"y has labels {preview(unknown)} that are not in the teacher's "
            f"{declared_name(baseline)} {preview(declared)}: every label of y must "
            "be the class of one of the teacher's output columns.")
    return classes


def teacher_columns(outputs, classes, baseline, n_expected):
    """The teacher's output columns in the order of ``classes``: column
    ``j`` is ``classes[j]`` unless the teacher names its columns' classes
    (then they are permuted by those; a single logit is the score of the
    second one). Checks the teacher's output count (``n_expected`` when it
    names none). Returns a TeacherColumns, or None to keep them as they are."""
    n_outputs = outputs.shape[1]
    declared = declared_classes(baseline)
    if declared is None:
        if n_outputs != n_expected:
            raise ValueError(
                f"The teacher has {n_outputs} outputs but y has "
                f"{len(classes)} classes ({preview(classes)}); output "
                "column j would be the score of classes_[j], the j-th class in "
                "sorted order. If the teacher was trained on other classes or "
                "labels, pass TorchBaseline(module, classes=[...]) with the class "
                "label of each output column, in column order; or set "
                "output_target='y' to fit y instead.")
        return None
    name = declared_name(baseline)
    if len(declared) != (2 if n_outputs == 1 else n_outputs):
        raise ValueError(
            f"The teacher's {name} has {len(declared)} entries but "
            f"the teacher has {n_outputs} output{'s' if n_outputs > 1 else ''}: "
            f"{name} gives the class label of each output column, "
            "in column order" + (" (for a single logit: the negative class, "
                                 "then the positive one)." if n_outputs == 1 else "."))
    if n_outputs == 1:
        negate = bool(declared[1] == classes[0])
        return TeacherColumns(np.zeros(1, dtype=np.intp), True) if negate else None
    order = np.unique(declared, return_index=True)[1]  # column of each classes_[k]
    if np.array_equal(order, np.arange(n_outputs)):
        return None
    return TeacherColumns(order)


def check_agreement(agreement, classes):
    """Refuse a torch teacher whose output columns are clearly not the
    classes of y in sorted order (``classes_``), when it does not name
    them (``TorchBaseline(classes=...)``, which skips this check).

    ``agreement.counts`` holds, per class of y and per output column, how
    many training samples of that class the teacher's argmax puts in that
    column: its trace is the teacher's agreement with y when column ``j``
    is taken as ``classes_[j]`` (the order the fit would use), and the best
    one-to-one matching of columns to classes (``linear_sum_assignment``)
    the agreement under the best order. The fit is refused when all of

    * the teacher is clearly a classifier of y under the best matching:
      its chance-corrected agreement (Cohen's kappa, the agreement above
      what the two label frequencies give by chance, as a fraction of the
      most it could be) is at least 0.5;
    * the order used agrees on fewer than half as many samples as the
      best matching: the model, which predicts about as the teacher's
      argmax does, would lose at least half of the accuracy the teacher
      offers;
    * the difference is more than ``3 sqrt(n_samples)`` samples, which
      chance on a few samples does not reach.

    A teacher that is merely weak (untrained, or poor on these data)
    fails the first condition, whatever its order, and is fitted.
    """
    counts = agreement.counts
    n_samples = int(counts.sum())
    if n_samples == 0:
        return
    assumed = int(np.trace(counts))
    rows, columns = linear_sum_assignment(counts, maximize=True)
    best = int(counts[rows, columns].sum())
    by_class, by_column = counts.sum(axis=1) / n_samples, counts.sum(axis=0) / n_samples
    chance = float(np.sum(by_class[rows] * by_column[columns]))
    kappa = (best / n_samples - chance) / (1.0 - chance) if chance < 1 else 0.0
    if not (kappa >= 0.5 and 2 * assumed < best
            and best - assumed > 3 * np.sqrt(n_samples)):
        return
    matched = np.empty(len(columns), dtype=classes.dtype)
    matched[columns] = classes[rows]
    raise ValueError(
        "The teacher's output columns do not match classes_ in sorted order "
        f"({preview(classes)}): its argmax agrees with y on "
        f"{assumed / n_samples:.1%} of the {n_samples} training samples when "
        f"output column j is taken as classes_[j], against {best / n_samples:.1%} "
        "under the best matching of its columns to the classes (which reads the "
        f"columns as classes={preview(matched)}). Pass TorchBaseline(module, "
        "classes=[...]) with the class label of each output column, in column "
        "order.")
