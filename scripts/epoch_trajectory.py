#!/usr/bin/env python
"""Per-epoch trajectory of the default autoencoder on full Fashion-MNIST: validation mAP/P@r2
(the split the checkpoint rule sees) beside the query-split mAP/P@r2, after every epoch.

    python scripts/epoch_trajectory.py '{"hidden": [500, 300]}' 8   # ~6 min on 2 CPU cores
    python scripts/epoch_trajectory.py '{"hidden": [1000, 500]}' 6

Argument 1: JSON of autoencoder parameters over the defaults; argument 2: epochs. For analysis
only: the query split is evaluated every epoch here, which training never does."""
import numpy as np, time
from semhash.data import load_builtin
from semhash.models import build_model
from semhash.models.tf_common import keras, ops, set_seed
from semhash.models.keras_common import stratified_validation_split
from semhash.evaluate import evaluate_codes
from semhash.metrics import retrieval_metrics
from semhash.hashing import bits_to_codes
d = load_builtin("fashion-mnist"); x,y = d.part("database"); qx,qy = d.part("query")
import sys, json
extra = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
m = build_model("autoencoder", {"input_shape": d.image_shape, "seed": 0, **extra})
set_seed(0)
tr, va = stratified_validation_split(y, 0.1, 0)
net = m._build_network(); net.compile(optimizer=keras.optimizers.Adam(m.learning_rate), loss="binary_crossentropy")
rng = np.random.default_rng(0); db = rng.choice(len(tr), 5000, replace=False)
codes = lambda a: bits_to_codes(np.asarray(ops.round(net.codings(a))).astype(np.uint8))
for ep in range(1, int(sys.argv[2]) + 1 if len(sys.argv) > 2 else 9):
    net.fit(x[tr], x[tr], epochs=1, batch_size=64, verbose=0)
    v = retrieval_metrics(codes(x[va]), y[va], codes(x[tr][db]), y[tr][db], 30, radii=(2,))
    r = evaluate_codes(codes(x), y, codes(qx), qy, 30)
    print(f"ep {ep} val mAP {v['map']:.4f} val P@r2 {v['neighbourhoods'][2]['precision_all']:.4f} | test mAP {r['map']:.4f} P@r2 {r['precision_r2']:.4f}", flush=True)
