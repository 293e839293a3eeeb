"""`WorkerBackupAndRestore`: Keras's `BackupAndRestore` for one or many workers.

Keras 3's `BackupAndRestore` lets every worker write the same files (tf-keras
let only the chief write) and writes the weights and the epoch number one
after the other, so a kill between the two resumes the wrong epoch. This one
writes each epoch's state (weights, epoch, the state of callbacks such as
`AdaptiveSmoothing`) into a directory of its own that is renamed into place
once complete, from the chief only; every worker restores from the newest
complete one. With several hosts the backup directory must be on storage all
workers read (as tf-keras required).
"""

import json
import os
import re
import shutil
import tempfile

import keras

from aradals_tf import distribution

_STATE = re.compile(r"^epoch-(\d+)$")


class WorkerBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Backs up the training state at every epoch end; restores it at `fit`'s start.

    Args:
        backup_dir: directory of the backups (one per run).
        stateful_callbacks: callbacks with `get_state()` (a JSON-able dict)
            and `set_state(state)`, saved and restored with the weights;
            `AdaptiveSmoothing` is one (its validation score cache and
            per-epoch records).
        keep: how many epochs' states to keep (the newest ones).

    Example:

    ```python
    adaptive = AdaptiveSmoothing((x_val, y_val), rescore_every=8)
    backup = WorkerBackupAndRestore("/shared/run.backup", [adaptive])
    model.fit(train, epochs=20, callbacks=[adaptive, backup])
    ```
    """

    def __init__(self, backup_dir, stateful_callbacks=(), keep=2):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.stateful_callbacks = list(stateful_callbacks)
        self.keep = int(keep)

    def _states(self):
        """Complete backups, oldest first: `[(epoch, path)]`."""
        if not os.path.isdir(self.backup_dir):
            return []
        found = []
        for name in os.listdir(self.backup_dir):
            match = _STATE.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(self.backup_dir, name)))
        return sorted(found)

    def restored_epoch(self):
        """The epoch `fit` will resume at: that of the newest complete backup, or 0."""
        states = self._states()
        return states[-1][0] if states else 0

    def on_train_begin(self, logs=None):
        states = self._states()
        if not states:
            return
        epoch, path = states[-1]
        if not self.model.built:
            raise ValueError("WorkerBackupAndRestore needs a built model before fit().")
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(path, "model.weights.h5"))
        with open(os.path.join(path, "callbacks.json")) as stream:
            saved = json.load(stream)
        for callback, state in zip(self.stateful_callbacks, saved):
            callback.set_state(state)
        self.model._initial_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if distribution.worker_role(self.model.distribute_strategy).is_chief:
            self._save_state(epoch + 1)

    def _save_state(self, epoch):
        os.makedirs(self.backup_dir, exist_ok=True)
        partial = tempfile.mkdtemp(prefix=".epoch-partial-", dir=self.backup_dir)
        try:
            self.model.save_weights(os.path.join(partial, "model.weights.h5"))
            with open(os.path.join(partial, "callbacks.json"), "w") as stream:
                json.dump([callback.get_state() for callback in self.stateful_callbacks], stream)
            final = os.path.join(self.backup_dir, f"epoch-{epoch:05d}")
            if os.path.exists(final):  # written by a run that died after this epoch
                shutil.rmtree(final)
            os.rename(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        for _, old in self._states()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
