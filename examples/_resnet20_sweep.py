"""Exploratory (issues 23, 24): SIM on a committed CIFAR-100 teacher (``--teacher``: the
ResNet-20, default, or the all-convolutional one) at m images (default 2,000), each fit's
estimator settings given as ``key=value,key=value`` (numbers parsed, the rest strings; ``alpha`` required), validated on 2,000 other training images
(``_experiments.split_subset``; the test split is never read). Appends one JSON line per fit
(the first: the teacher's validation accuracy) to ``--output`` and prints it::

    python examples/_resnet20_sweep.py alpha=0.04 alpha=0.16,output_alpha=0.001 \\
        alpha=0.16,state_inputs=model --output sweep.jsonl

Each record holds the FLOPs (multiply-adds per image) of the model's plain export
(``to_torch(plain=True)``, channels no row reads removed; ``penalty=channel`` removes whole
channels) and their fraction of the teacher's. With ``--diagnose`` each record also holds
the block-by-block nonzeros per link and the relative error of the model's states. Data from ``$SKSIM_DATA`` or ``../shared/data``
(``cifar-100/``). Not the issue's protocol
(m = 10,000 and 50,000, anchors at the same counts): where settings stand against each other.
"""
import argparse
import json
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
sys.path.insert(0, str(EXAMPLES))
sys.path.insert(0, str(EXAMPLES.parent))


def setting(text):
    """``alpha=0.16,state_inputs=model`` -> {"alpha": 0.16, "state_inputs": "model"}."""
    out = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = None if value == "None" else value
    if "alpha" not in out:
        raise SystemExit(f"setting {text!r} has no alpha")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", type=setting)
    parser.add_argument("--teacher", choices=["resnet20", "allconv"], default="resnet20")
    parser.add_argument("--m", type=int, default=2000)
    parser.add_argument("--n-val", type=int, default=2000)
    parser.add_argument("--output", default=str(EXAMPLES / "output" / "resnet20_sweep.jsonl"))
    parser.add_argument("--diagnose", action="store_true",
                        help="also record each block's nonzeros per link and the relative "
                             "error of the model's states against the teacher's on the "
                             "validation images")
    args = parser.parse_args()
    import torch

    import _experiments as E
    from _conv_experiments import plain_shape
    import cifar100_resnet20 as resnet20
    import cifar100_teacher as allconv
    from _shared import default_data_home
    from sksim import SIMClassifier, TorchBaseline
    from sksim.datasets import load_cifar100
    from sksim.plain_export import count_flops

    torch.set_num_threads(1)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)

    def emit(record):
        print(json.dumps(record), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")

    data = load_cifar100(default_data_home())
    teacher = (resnet20 if args.teacher == "resnet20" else allconv).load_teacher().eval()
    flat_teacher = torch.nn.Sequential(torch.nn.Unflatten(1, (3, 32, 32)), teacher).eval()
    teacher_flops = count_flops(flat_teacher, (3 * 32 * 32,))
    fit_idx, val_idx = E.split_subset(len(data.X_train), args.m, n_val=args.n_val)
    X, y = data.X_train[fit_idx], data.y_train[fit_idx]
    Xv, yv = data.X_train[val_idx], data.y_train[val_idx]
    with torch.no_grad():
        tv = torch.cat([teacher(torch.as_tensor(Xv[i:i + 500]).reshape(-1, 3, 32, 32))
                        for i in range(0, len(Xv), 500)]).argmax(1).numpy()
    weights = sum(int(p.numel()) for n, p in teacher.named_parameters() if p.dim() > 1)
    emit({"teacher": args.teacher, "m": args.m, "teacher_val_acc": float((tv == yv).mean()),
          "teacher_weights": weights, "teacher_flops": teacher_flops})
    for params in args.settings:
        start = time.perf_counter()
        model = SIMClassifier(TorchBaseline(teacher, input_shape=(3, 32, 32), batch_size=100,
                                            classes=list(range(100))),
                              n_jobs=1, **params).fit(X, y)
        fit_s = time.perf_counter() - start
        pred = model.predict(Xv)
        record = {**params, "m": args.m, "relax": model.relax, "fit_s": round(fit_s, 1),
                  "val_acc": float((pred == yv).mean()), "agreement": float((pred == tv).mean()),
                  "nonzero": int(model.n_nonzero_), "fraction": model.n_nonzero_ / weights}
        record["teacher"] = args.teacher
        try:
            flops, channels = plain_shape(model.to_torch(plain=True), 3 * 32 * 32)
            record.update({"flops": flops, "flops_fraction": flops / teacher_flops,
                           "conv_channels": channels})
        except ValueError as exc:  # e.g. a block left constant: no plain network
            record.update({"flops": None, "plain_export": str(exc)})
        if args.diagnose:
            record.update(diagnosis(model, Xv[:500]))
        emit(record)


def diagnosis(model, X):
    """Per block: nonzeros / entries of each link (the teacher's layer first,
    then the fitted shortcut) and ``||x_model - x_teacher|| / ||x_teacher||``
    of its states (the model's own forward, the teacher's recorded states, in
    the block scales' units) on ``X``."""
    import numpy as np

    from sksim import weight_sharing as ws

    shared_model = model._shared_model
    states, _ = model.baseline.record(X)
    own, _, _ = ws.block_equilibrium(shared_model, X, tol=0.0, max_iter=1)
    sizes = [int(np.prod(shape)) for shape in shared_model.structure.block_shapes]
    edges = np.cumsum([0, *sizes])
    errors = []
    for block, scale in enumerate(model.block_scales_):
        teacher = np.maximum(states[:, edges[block]:edges[block + 1]] * scale, 0.0)
        errors.append(float(np.linalg.norm(own[block] - teacher) / np.linalg.norm(teacher)))
    return {"links_kept": [[f"{np.count_nonzero(k)}/{k.size}" for k in kernels]
                           for kernels in shared_model.kernels],
            "state_relative_error": errors}


if __name__ == "__main__":
    main()
