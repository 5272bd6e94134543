"""Figures of the convolutional-teacher experiments
================================================

Accuracy against nonzero parameters for the convolutional teachers, from the
JSON files of ``cifar100.py`` and ``fashion_mnist_cnn.py``.

One figure per dataset: every SIM run found under ``examples/results/`` (one
curve per JSON file, labelled by its settings), magnitude pruning of the
teacher without and with the one-epoch fine-tune (from the run with the most
pruning points), the teacher's accuracy and the "within 2 points at <= 30% of
the weights" box of the CIFAR-100 target; for the ResNet-20 teacher the one-shot
anchors of ``cifar100_anchors.py`` instead of the pruning points. Writes
``examples/results/cifar100_sparsity.png``,
``examples/results/cifar100_resnet20_sparsity.png`` and
``examples/results/fashion_mnist_cnn_sparsity.png``::

    python examples/conv_figures.py
"""

import json
from pathlib import Path

from _experiments import pyplot

RESULTS = Path(__file__).resolve().parent / "results"
# pruning is drawn in red and orange
SIM_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
              "tab:olive", "tab:cyan", "navy", "darkgreen", "indigo", "black")


def _label(record, path):
    parts = [path.relative_to(RESULTS).with_suffix("").as_posix(), f"m {record['m']:,}"]
    if record.get("relax", 1.0) != 1.0:
        parts.append(f"relax {record['relax']:g}")
    if record.get("output_alpha") is not None:
        parts.append(f"output_alpha {record['output_alpha']:g}")
    parts.append(f"block_alpha {record.get('block_alpha', 'relative')}")
    for key, name in (("lateral_kernel", "lateral"), ("skip_links", "skip"),
                      ("row_bound", "row_bound")):
        if record.get(key):
            parts.append(f"{name} {record[key]:g}")
    if record.get("state_inputs", "teacher") != "teacher":
        parts.append("model inputs")
    if record.get("adaptive_l1"):
        parts.append(f"adaptive_l1 {record['adaptive_l1']:g}")
    return ", ".join(parts)


def _anchor_curves(ax, teacher_name):
    """The one-shot anchors of ``cifar100_anchors.py`` on ``teacher_name``:
    one curve per method and allocation (the file with the most rows)."""
    records = [json.loads(p.read_text())
               for p in RESULTS.glob(f"cifar100_anchors/anchors_{teacher_name}_m*.json")]
    if not records:
        return
    record = max(records, key=lambda r: len(r["rows"]))
    styles = {"magnitude_ls_refit": "tab:red", "sparsegpt": "tab:orange", "wanda": "gold",
              "magnitude": "salmon", "global_magnitude": "maroon",
              "global_magnitude_fine_tuned": "peru"}
    curves = {}
    for row in record["rows"]:
        curves.setdefault((row["method"], row["allocation"]), []).append(
            (row["kept_fraction"], row["test_accuracy"]))
    for (method, allocation), points in curves.items():
        points.sort()
        ax.plot(*zip(*points), color=styles.get(method, "tab:red"), marker="x", lw=1,
                ls="-" if allocation == "sim" else "--",
                label=f"{method} ({allocation} allocation), m = {record['m']:,}, no fine-tune"
                if method != "global_magnitude_fine_tuned" else
                f"global magnitude + 1-epoch fine-tune, m = {record['m']:,}")


def figure(pattern, out_name, title, teacher_name="allconv"):
    paths = sorted(RESULTS.glob(pattern))
    records = [(path, json.loads(path.read_text())) for path in paths]
    records = [(path, r) for path, r in records
               if r.get("teacher_name", "allconv") == teacher_name]
    if not records:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 7.5))
    teacher = records[0][1]["teacher"]
    pruning = max((r.get("pruning") or [] for _, r in records), key=len)
    if teacher_name != "allconv":  # the anchors' file has them, on the same images
        pruning = []
        _anchor_curves(ax, teacher_name)
    if pruning:
        fractions = [p["fraction"] for p in pruning]
        ax.plot(fractions, [p["test_accuracy"] for p in pruning], color="tab:red",
                marker=".", label="magnitude pruning, no fine-tune")
        ax.plot(fractions, [p["fine_tuned_accuracy"] for p in pruning], color="tab:orange",
                ls="--", marker=".", label="magnitude pruning + 1-epoch fine-tune")
    for (path, record), color in zip(records, SIM_COLORS * len(records)):
        fits = sorted(record["fits"], key=lambda f: f["fraction_of_teacher"])
        ax.plot([f["fraction_of_teacher"] for f in fits], [f["test_accuracy"] for f in fits],
                marker="o", lw=1.5, color=color, label=_label(record, path))
    ax.axhline(teacher["test_accuracy"], color="k", lw=1,
               label=f"teacher ({teacher['test_accuracy']:.2%})")
    ax.axhline(teacher["test_accuracy"] - 0.02, color="k", lw=0.8, ls="--",
               label="teacher - 2 points")
    ax.axvline(0.30, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel(f"nonzero parameters / teacher's weights ({teacher['weights']:,})")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1)
    fig.tight_layout()
    path = RESULTS / out_name
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def main():
    figure("**/cifar100*.json", "cifar100_sparsity.png",
           "CIFAR-100: weight-shared SIM vs magnitude pruning of the all-conv teacher")
    figure("**/cifar100*.json", "cifar100_resnet20_sparsity.png",
           "CIFAR-100: weight-shared SIM vs one-shot pruning of the ResNet-20 teacher",
           teacher_name="resnet20")
    figure("fashion_mnist_cnn*.json", "fashion_mnist_cnn_sparsity.png",
           "Fashion-MNIST: weight-shared SIM vs magnitude pruning of the small CNN")


if __name__ == "__main__":
    from _shared import run_script

    run_script(main)
