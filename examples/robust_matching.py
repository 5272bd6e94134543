"""Robustness at the eps people use: perturbation-aware matching, strong attacks, certified accuracy
=================================================================================================

Robustness issue 25: SIM models fitted with ``perturbation=`` (the teacher's
states on perturbed inputs as the design, its clean states as the targets)
and with ``row_bound``, next to the teacher and the teacher after PGD
adversarial fine-tuning (Madry et al.) given the robust SIM fit's wall time;
every model attacked with strong PGD and certified by interval bound
propagation.

    nice -n 10 python examples/robust_matching.py --dataset fashion-mnist
    nice -n 10 python examples/robust_matching.py --dataset mnist
    nice -n 10 python examples/robust_matching.py --dataset digits --m 800
    nice -n 10 python examples/robust_matching.py --dataset cifar100 --m 5000

Protocol (all choices on a validation split of training images, never on
the test set):

* states recorded by ``fit`` itself from the torch teacher (``TorchBaseline``)
  on the first ``--m`` images of a fixed permutation of the training split:
  the MLP teachers of the other experiments, fitted with
  ``structure="feedforward"`` (so interval bound propagation through the
  model is one exact pass per layer), or the all-convolutional CIFAR-100
  teacher of ``cifar100.py``, fitted with weight sharing (``alpha`` 1e-2,
  ``output_alpha`` 1e-3; no certification: interval propagation through
  its 71,680 unrolled states and through the convolutional teacher is not
  run);
* ``sim_plain``: ``alpha=--alpha``, no perturbation (its fit time is the
  unit of the fit-time target);
* ``sim_perturbed``: the ``--perturbation-grid`` candidate
  (``kind:eps:mix``) with the best strong-PGD validation accuracy at
  ``--select-eps`` among those within ``--clean-budget`` of the teacher's
  clean validation accuracy (else the most accurate candidate);
* ``sim_row_bound``: likewise among the ``--row-bound-grid`` candidates
  (``kappa:row_bound``);
* ``sim_combined``: likewise among the ``--combined-grid`` candidates, a
  perturbation and a row bound together (``kind:eps:mix@kappa:row_bound``);
* ``teacher_adversarial``: the teacher fine-tuned by PGD adversarial training
  at ``--select-eps`` (7 steps of 2.5 eps / 7) for the wall time of the
  ``sim_perturbed`` fit.

Attacks: PGD on the cross-entropy in float64 (SIM through ``est.to_torch``
in float64: implicit differentiation through the equilibrium), ``--pgd-steps``
steps of eps/4 from a random start, ``--restarts`` restarts, images kept in
[0, 1]; a sample is robust only if it is classified correctly at every
iterate of every restart. A sanity check runs the same attack on the teacher
at ``--sanity-eps``, where it must drive the accuracy to near 0. Certified
accuracy: the fraction of attacked test images whose label interval bound
propagation proves constant within eps (and correct), for the SIM models
(:func:`sksim.certify.certified_accuracy`) and the two teachers (the same
intervals through their layers).

Writes ``robust_matching_<dataset>.json`` to ``--output-dir`` (default: a new
``examples/output/run-<UTC time>/``; ``--output-dir examples/results``
regenerates the committed results).
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import _experiments as E
import numpy as np

EPS = {"fashion-mnist": [0.05, 0.1, 0.2], "mnist": [0.05, 0.1, 0.2],
       "digits": [0.05, 0.1, 0.2], "cifar100": [2 / 255, 8 / 255]}
SELECT_EPS = {"cifar100": 2 / 255}  # else 0.1
SANITY_EPS = {"cifar100": 16 / 255}  # else 0.3
CERTIFY_EPS = [0.005, 0.01, 0.02, 0.05, 0.1]
CIFAR_GRID = ["uniform:0.0314:both", "fgsm:0.0078:both", "pgd:0.0078:both"]
CIFAR_ROW_BOUND_GRID = ["0.95:0.5"]
COMBINED_GRID = ["uniform:0.5:both@0.5:20", "uniform:0.3:both@0.2:40"]
MODEL_OF = {"perturbation": "sim_perturbed", "row_bound": "sim_row_bound",
            "combined": "sim_combined"}
PERTURBATION_GRID = ["uniform:0.1:both", "uniform:0.3:both", "uniform:0.5:both",
                     "uniform:0.8:both", "fgsm:0.1:both", "pgd:0.05:both", "pgd:0.1:both",
                     "pgd:0.1:perturbed"]
ROW_BOUND_GRID = ["0.5:10", "0.5:20", "0.5:50", "0.2:40"]


def parse_args():
    parser = E.add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.set_defaults(dataset=None)
    parser._option_string_actions["--dataset"].choices = (*E.DATASETS, "cifar100")
    parser.add_argument("--m", type=int, default=None,
                        help="training images the teacher is recorded on (default 5000; "
                             "digits 1000)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="alpha of every SIM model (default 1e-3; cifar100 1e-2)")
    parser.add_argument("--eps", type=float, nargs="+", default=None)
    parser.add_argument("--select-eps", type=float, default=None)
    parser.add_argument("--n-attack", type=int, default=1000,
                        help="test images attacked and certified (a fixed subset)")
    parser.add_argument("--n-select", type=int, default=500,
                        help="validation images attacked to choose the candidates")
    parser.add_argument("--pgd-steps", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--sanity-eps", type=float, default=None)
    parser.add_argument("--clean-budget", type=float, default=0.03)
    parser.add_argument("--perturbation-grid", nargs="+", default=None)
    parser.add_argument("--row-bound-grid", nargs="+", default=None)
    parser.add_argument("--combined-grid", nargs="*", default=None,
                        help="candidates with both a perturbation and a row bound "
                             "(kind:eps:mix@kappa:R; default: see COMBINED_GRID, none "
                             "for cifar100)")
    args = parser.parse_args()
    args.dataset = args.dataset or "fashion-mnist"
    cifar = args.dataset == "cifar100"
    args.alpha = args.alpha or (1e-2 if cifar else 1e-3)
    args.select_eps = args.select_eps or SELECT_EPS.get(args.dataset, 0.1)
    args.sanity_eps = args.sanity_eps or SANITY_EPS.get(args.dataset, 0.3)
    args.perturbation_grid = args.perturbation_grid or (CIFAR_GRID if cifar
                                                        else PERTURBATION_GRID)
    args.row_bound_grid = args.row_bound_grid or (CIFAR_ROW_BOUND_GRID if cifar
                                                  else ROW_BOUND_GRID)
    if args.combined_grid is None:
        args.combined_grid = [] if cifar else COMBINED_GRID
    return args


class Problem:
    """The dataset, the teacher (a torch module on flat rows) and how SIM is
    fitted to it."""

    def __init__(self, args):
        import torch

        self.cifar = args.dataset == "cifar100"
        if self.cifar:
            from cifar100_teacher import INPUT_SHAPE, WEIGHTS, load_teacher

            from sksim.datasets import load_cifar100

            self.data = load_cifar100(args.data_home)
            self.data.description = "CIFAR-100, official split: 50,000 train / 10,000 test"
            conv = load_teacher()
            for p in conv.parameters():
                p.requires_grad_(False)
            # flat rows in, as the MLP teachers take them
            self.teacher = torch.nn.Sequential(torch.nn.Unflatten(1, INPUT_SHAPE), conv).eval()
            self.input_shape = INPUT_SHAPE
            self.tinfo = {"architecture": "all-convolutional (cifar100_teacher.py)",
                          "weights": str(WEIGHTS.relative_to(E.REPO_ROOT)),
                          "test_accuracy": E.torch_accuracy(self.teacher, self.data.X_test,
                                                            self.data.y_test)}
            self.n_weights = sum(p.numel() for p in conv.parameters() if p.dim() > 1)
        else:
            self.data = E.load_dataset(args.dataset, args.data_home, args.seed)
            self.teacher, self.tinfo = E.get_teacher(args.dataset, self.data, args.seed)
            self.input_shape = None
            self.n_weights = E.teacher_weight_count(self.teacher)

    def fit(self, X, y, **params):
        """A SIMClassifier fitted on the teacher's own recording (feed-forward
        for an MLP teacher, weight-shared for the convolutional one)."""
        from sksim import SIMClassifier, TorchBaseline

        if self.cifar:
            baseline = TorchBaseline(self.teacher[1], input_shape=self.input_shape,
                                     classes=list(range(100)))
            params = {"output_alpha": 1e-3, **params}
        else:
            baseline = TorchBaseline(self.teacher)
            params = {"structure": "feedforward", **params}
        est = SIMClassifier(baseline, random_state=0, **params)
        start = time.perf_counter()
        est.fit(X, y)
        return est, time.perf_counter() - start

    def summary(self, est):
        """What the results record of a fitted model."""
        if self.cifar:
            return {"test_accuracy": float(est.score(self.data.X_test, self.data.y_test)),
                    "n_nonzero": int(est.n_nonzero_),
                    "nonzero_fraction": est.n_nonzero_ / self.n_weights,
                    "lipschitz_path_bound": est.lipschitz_path_bound_}
        return E.sim_summary(est, self.data, self.n_weights)


def pgd_accuracy(forward, X, y, eps, args):
    return float(E.strong_pgd_correct(forward, X, y, eps, steps=args.pgd_steps,
                                      restarts=args.restarts, seed=args.seed).mean())


def choose(candidates, teacher_val, budget):
    """The candidate with the best robust validation accuracy among those
    within ``budget`` of the teacher's clean validation accuracy."""
    eligible = [c for c in candidates if c["validation_clean"] >= teacher_val - budget]
    if eligible:
        rule = ("best validation PGD accuracy among candidates within "
                f"{100 * budget:g} clean points of the teacher")
        return max(eligible, key=lambda c: c["validation_pgd"]), rule
    rule = "no candidate within the clean budget: the most accurate one"
    return max(candidates, key=lambda c: c["validation_clean"]), rule


def params_of(spec):
    """A candidate's parameters: ``kind:eps:mix`` (a perturbation), ``kappa:R``
    (a row bound), or both joined by ``@``."""
    params = {}
    for part in spec.split("@"):
        fields = part.split(":")
        if len(fields) == 3:
            params.update(perturbation=fields[0], perturbation_eps=float(fields[1]),
                          perturbation_mix=fields[2], perturbation_range=(0, 1))
        else:
            params.update(kappa=float(fields[0]), row_bound=float(fields[1]), max_iter=5000)
    return params


def candidates_of(kind, specs, problem, X, y, X_sel, y_sel, X_val, y_val, args):
    out = []
    for spec in specs:
        params = params_of(spec)
        est, seconds = problem.fit(X, y, alpha=args.alpha, **params)
        info = {"spec": spec, "params": {k: list(v) if isinstance(v, tuple) else v
                                         for k, v in params.items()},
                "fit_seconds": round(seconds, 2), "n_nonzero": int(est.n_nonzero_),
                "validation_clean": float(est.score(X_val, y_val)),
                "validation_pgd": pgd_accuracy(E.sim_forward64(est), X_sel, y_sel,
                                               args.select_eps, args)}
        E.log(f"{kind} {spec}: {info}")
        out.append((est, info))
    return out


def evaluate(name, forward, predict, certify, data, attack, eps_list, args):
    Xa, ya = data.X_test[attack], data.y_test[attack]
    out = {"clean_test_accuracy": float(np.mean(predict(data.X_test) == data.y_test)),
           "clean_attack_subset_accuracy": float(np.mean(predict(Xa) == ya)),
           "pgd": {}, "certified": {}}
    for eps in eps_list:
        start = time.perf_counter()
        out["pgd"][str(eps)] = pgd_accuracy(forward, Xa, ya, eps, args)
        E.log(f"{name} pgd eps={eps:g}: {out['pgd'][str(eps)]:.4f} "
              f"({time.perf_counter() - start:.0f} s)")
    for eps in CERTIFY_EPS if certify is not None else []:
        out["certified"][str(eps)] = float(np.mean(certify(Xa, ya, eps)))
    E.log(f"{name}: clean {out['clean_test_accuracy']:.4f}, certified {out['certified']}")
    return out


def main():
    args = parse_args()
    start_all = time.perf_counter()
    out_dir = Path(args.output_dir)
    m = args.m or E.DEFAULT_M[args.dataset]
    eps_list = args.eps or EPS[args.dataset]

    import torch

    from sksim.certify import certified_accuracy, certified_mlp_accuracy

    torch.manual_seed(args.seed)
    problem = Problem(args)
    data, teacher, tinfo, n_teacher = (problem.data, problem.teacher, problem.tinfo,
                                       problem.n_weights)
    fit_idx, val_idx = E.split_subset(len(data.X_train), m, n_val=2000 if problem.cifar
                                      else 5000, seed=args.seed)
    X, y = data.X_train[fit_idx], data.y_train[fit_idx]
    X_val, y_val = data.X_train[val_idx], data.y_train[val_idx]
    X_sel, y_sel = X_val[:args.n_select], y_val[:args.n_select]
    attack = np.random.default_rng(args.seed).permutation(len(data.X_test))[
        :min(args.n_attack, len(data.X_test))]
    teacher_val = E.torch_accuracy(teacher, X_val, y_val)
    E.log(f"{args.dataset}: teacher test {tinfo['test_accuracy']:.4f}, validation "
          f"{teacher_val:.4f} on {len(val_idx)} images")

    # ------------------------------------------------------------- models
    plain, plain_seconds = problem.fit(X, y, alpha=args.alpha)
    plain_info = {"alpha": args.alpha, "fit_seconds": round(plain_seconds, 2),
                  "validation_clean": float(plain.score(X_val, y_val)),
                  **problem.summary(plain)}
    E.log(f"sim_plain: {plain_info}")
    chosen = {}
    for kind, specs in (("perturbation", args.perturbation_grid),
                        ("row_bound", args.row_bound_grid),
                        ("combined", args.combined_grid)):
        if not specs:
            continue
        candidates = candidates_of(kind, specs, problem, X, y, X_sel, y_sel, X_val, y_val,
                                   args)
        best, rule = choose([info for _, info in candidates], teacher_val,
                            args.clean_budget)
        est = next(e for e, info in candidates if info is best)
        chosen[kind] = {"estimator": est, "info": {**best, **problem.summary(est)},
                        "rule": rule, "candidates": [info for _, info in candidates]}
        E.log(f"sim_{kind}: {best['spec']} ({rule})")
    budget = chosen["perturbation"]["info"]["fit_seconds"]
    adversarial, adv_info = E.adversarial_fine_tune(
        copy.deepcopy(teacher), X, y, args.select_eps, seconds=budget, seed=args.seed)
    adversarial.eval()
    for p in adversarial.parameters():
        p.requires_grad_(False)
    E.log(f"teacher_adversarial: {adv_info}")

    # ------------------------------------------------------------ attacks
    def torch_predict(model):
        return lambda Z: E.torch_logits(model, Z).argmax(1)

    def torch_forward64(model):
        return copy.deepcopy(model).double().eval()

    def mlp_certify(model):
        if problem.cifar:
            return None
        coefs, intercepts = E.mlp_layers(model)
        return lambda Z, labels, eps: certified_mlp_accuracy(
            coefs, intercepts, Z, labels, eps, clip=(0, 1))

    def sim_certify(est):
        if problem.cifar:
            return None
        return lambda Z, labels, eps: certified_accuracy(est, Z, labels, eps, clip=(0, 1))

    sanity = pgd_accuracy(torch_forward64(teacher), data.X_test[attack], data.y_test[attack],
                          args.sanity_eps, args)
    E.log(f"sanity: teacher under PGD at eps {args.sanity_eps}: {sanity:.4f}")
    results = {
        "teacher": evaluate("teacher", torch_forward64(teacher), torch_predict(teacher),
                            mlp_certify(teacher), data, attack, eps_list, args),
        "teacher_adversarial": evaluate(
            "teacher_adversarial", torch_forward64(adversarial), torch_predict(adversarial),
            mlp_certify(adversarial), data, attack, eps_list, args),
    }
    for name, est in (("sim_plain", plain),
                      *((MODEL_OF[kind], chosen[kind]["estimator"]) for kind in chosen)):
        results[name] = evaluate(name, E.sim_forward64(est), est.predict, sim_certify(est),
                                 data, attack, eps_list, args)

    # ------------------------------------------------------------ targets
    target_eps = str(args.select_eps)
    teacher_res = results["teacher"]

    def gain(name):
        res = results[name]
        return {"pgd_gain_points": round(100 * (res["pgd"][target_eps]
                                                - teacher_res["pgd"][target_eps]), 2),
                "clean_cost_points": round(100 * (teacher_res["clean_test_accuracy"]
                                                  - res["clean_test_accuracy"]), 2)}

    targets = {
        f"pgd_at_{target_eps}_at_least_teacher_plus_20_at_most_3_clean_points": {
            name: {**gain(name), "met": gain(name)["pgd_gain_points"] >= 20
                   and gain(name)["clean_cost_points"] <= 3}
            for name in (MODEL_OF[kind] for kind in chosen)},
        "certified_above_0_at_0.05_where_the_teacher_certifies_nothing": {
            name: {"certified": results[name]["certified"]["0.05"],
                   "teacher": teacher_res["certified"]["0.05"],
                   "met": results[name]["certified"]["0.05"] > 0
                   and teacher_res["certified"]["0.05"] == 0}
            for name in ("sim_plain", *(MODEL_OF[kind] for kind in chosen))
            if not problem.cifar},
        "robust_fit_at_most_3x_plain_fit": {
            name: {"ratio": round(chosen[kind]["info"]["fit_seconds"] / plain_seconds, 2),
                   "met": chosen[kind]["info"]["fit_seconds"] <= 3 * plain_seconds}
            for name, kind in ((MODEL_OF[kind], kind) for kind in chosen)},
    }
    payload = {
        "experiment": "robust_matching", "dataset": args.dataset, "data": data.description,
        "command": " ".join(["python", "examples/robust_matching.py", *sys.argv[1:]]),
        "teacher": {**tinfo, "n_weights_total": n_teacher, "validation_accuracy": teacher_val},
        "m": m, "n_validation": len(val_idx), "n_select": len(X_sel),
        "attacks": {"eps": eps_list, "select_eps": args.select_eps,
                    "pgd": f"{args.pgd_steps} steps of eps/4 from a uniform random start, "
                           f"{args.restarts} restarts, float64, projection onto the eps ball "
                           "and [0, 1]; robust = correct at every iterate of every restart",
                    "n_attack": len(attack),
                    "sanity": {"eps": args.sanity_eps, "teacher_pgd_accuracy": sanity},
                    "certified": "interval bound propagation (sksim.certify), eps ball "
                                 "clipped to [0, 1], margins of the predicted class; "
                                 "certified accuracy = certified and correct",
                    "certify_eps": CERTIFY_EPS},
        "models": {"sim_plain": plain_info,
                   **{MODEL_OF[kind]: {**value["info"], "selection_rule": value["rule"],
                                       "candidates": value["candidates"]}
                      for kind, value in chosen.items()},
                   "teacher_adversarial": adv_info},
        "results": results, "targets": targets,
        "seconds_total": round(time.perf_counter() - start_all, 1),
        "environment": E.environment(),
    }
    E.write_json(out_dir / f"robust_matching_{args.dataset}.json", payload)


if __name__ == "__main__":
    from _shared import run_script

    run_script(main)
