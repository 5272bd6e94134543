"""Exploratory (issue 23): SIM on the committed ResNet-20 teacher at m = 2,000 with the
estimators' defaults (relax 0.01) at the alphas given, each ``ALPHA`` or ``ALPHA:OUTPUT_ALPHA``,
validated on 2,000 other training images (``_experiments.split_subset``; the test split is never
read). Prints one JSON line per fit (the first: the teacher's validation accuracy)::

    python examples/_resnet20_sweep.py 0.01 0.04 0.16 0.04:0.001 0.16:0.001

Data from ``$SKSIM_DATA`` or ``../shared/data`` (``cifar-100/``). Not the issue's protocol
(m = 10,000 and 50,000, anchors at the same counts): a first look at where the defaults stand.
"""
import json
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
sys.path.insert(0, str(EXAMPLES))
sys.path.insert(0, str(EXAMPLES.parent))
import torch

import _experiments as E
import cifar100_resnet20 as resnet20
from _shared import default_data_home
from sksim import SIMClassifier, TorchBaseline
from sksim.datasets import load_cifar100

torch.set_num_threads(1)
data = load_cifar100(default_data_home())
teacher = resnet20.load_teacher()
fit_idx, val_idx = E.split_subset(len(data.X_train), 2000, n_val=2000)
X, y = data.X_train[fit_idx], data.y_train[fit_idx]
Xv, yv = data.X_train[val_idx], data.y_train[val_idx]
with torch.no_grad():
    tv = torch.cat([teacher(torch.as_tensor(Xv[i:i+500]).reshape(-1, 3, 32, 32)) for i in range(0, len(Xv), 500)]).argmax(1).numpy()
weights = sum(int(p.numel()) for n, p in teacher.named_parameters() if p.dim() > 1)
print(json.dumps({"teacher_val_acc": float((tv == yv).mean()), "teacher_weights": weights}), flush=True)
for alpha, oa in [(float(a.split(":")[0]), float(a.split(":")[1]) if ":" in a else None) for a in sys.argv[1:]]:
    t = time.perf_counter()
    model = SIMClassifier(TorchBaseline(teacher, input_shape=(3, 32, 32), batch_size=100, classes=list(range(100))),
                          alpha=alpha, output_alpha=oa, n_jobs=1).fit(X, y)
    fit_s = time.perf_counter() - t
    pred = model.predict(Xv)
    print(json.dumps({"alpha": alpha, "output_alpha": oa, "relax": model.relax, "fit_s": round(fit_s, 1), "val_acc": float((pred == yv).mean()),
                      "agreement": float((pred == tv).mean()), "nonzero": int(model.n_nonzero_),
                      "fraction": model.n_nonzero_ / weights}), flush=True)
