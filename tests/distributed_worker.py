"""One training process of the distributed tests (run as a script, not collected).

    python tests/distributed_worker.py SPEC_JSON

SPEC_JSON: {"strategy": "multiworker" | "mirrored" | "default", "out": run dir,
"dump": where to write this process's final state (npz), "epochs": int,
"pause_at": [epoch, batch] (optional: write "<dump>.paused" there and sleep,
so that a test can kill the process mid-epoch)}. For "multiworker" the
caller sets TF_CONFIG; "mirrored" runs on two logical CPU devices.
"""

import json
import os
import sys
import time

spec = json.loads(sys.argv[1])

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if spec["strategy"] == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from aradals_tf import experiments  # noqa: E402

# AR-AdaLS with the attack, the score cache and the validation cache on a
# rotation of 2, so that resuming has every kind of state to restore.
config = experiments.TrainConfig(
    dataset="digits",
    method="ar-adals",
    epochs=spec["epochs"],
    batch_size=128,
    seed=0,
    strategy=spec["strategy"],
    rescore_every=2,
    num_strata=3,
    attack_steps=5,
    alpha=0.1,
    eps_init=0.3,
    eps_cap=0.5,
    max_step=0.5,
    eps_update="additive",
    learning_rate=3e-3,
)


class Dump(keras.callbacks.Callback):
    """Writes the state that must agree across processes, and can pause mid-epoch."""

    def on_train_batch_end(self, batch, logs=None):
        pause = spec.get("pause_at")
        if pause and [self._epoch, batch] == pause:
            with open(spec["dump"] + ".paused", "w") as stream:
                stream.write(str(os.getpid()))
            time.sleep(600)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_end(self, logs=None):
        model = self.model
        np.savez(
            spec["dump"],
            weights=np.concatenate([w.ravel() for w in model.backbone.get_weights()]),
            eps=model.stratum_eps.numpy(),
            thresholds=model.strata.thresholds().numpy(),
            cache=model.score_cache.bins.numpy(),
            histogram=model.score_cache.histogram.numpy(),
        )


experiments.train_run(config, spec["out"], verbose=0, extra_callbacks=[Dump()])
print("done", flush=True)
