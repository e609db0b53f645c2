"""Training on several devices: ``training_strategy`` and ``semhash.train.train`` under a
MirroredStrategy, on two logical CPU devices in a child process (no GPU needed)."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from semhash.models.tf_common import training_strategy
from semhash.train import train
from semhash.workspace import Workspace

devices = [d.name for d in tf.config.list_logical_devices("CPU")]
replicas = training_strategy(devices).num_replicas_in_sync
default = training_strategy().num_replicas_in_sync  # no GPU here: the default strategy
lines = []
result = train(
    "digits", "autoencoder", {"epochs": 2, "hidden": [16], "bits": 8, "seed": 0},
    name="mirrored", workspace=Workspace(sys.argv[1]), verbose=0, log=lines.append, devices=devices,
)
print(json.dumps({"devices": devices, "replicas": replicas, "default": default, "log": lines,
                  "device": result.model.meta["device"], "epochs": len(result.model.meta["history"]["loss"]),
                  "hasher": result.model.hasher_path.is_file()}))
"""


def test_training_on_two_mirrored_devices(tmp_path):
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "home")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(data["devices"]) == 2 and data["replicas"] == 2 and data["default"] == 1
    (line,) = [entry for entry in data["log"] if entry.startswith("training on")]
    assert line.startswith("training on 2 devices (MirroredStrategy:") and data["device"] in line
    assert data["epochs"] == 2 and data["hasher"]
