"""Training across processes with `tf.distribute`: the cluster, worker roles, cross-worker sums.

`MultiWorkerMirroredStrategy` reads the cluster from the standard `TF_CONFIG`
variable. This module checks that variable before TensorFlow does (a typo
there otherwise surfaces as a hang or a C++ error), builds one strategy per
process (collectives are configured once per process), bounds the time a
worker waits for the others and for a peer that died, tells a worker whether
it is the chief (the one that writes), and sums small arrays across workers
(the validation statistics behind the eps update), so that every worker
computes the same eps from the same numbers.

It also works around two Keras 3 bugs that stop `fit` under any
`MultiWorkerMirroredStrategy` (keras-team/keras#20585, tensorflow#72388): the
symbolic build reduces the first batch's `(x, y)` tuple with one collective
call, which the strategy cannot do on a nest, and the step's scalar logs are
reduced along an axis 0 they do not have. `multi_worker_strategy` applies the
fix; it changes nothing for other strategies.
"""

import collections
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

# Seconds a worker waits for all workers to come up before giving up.
STARTUP_TIMEOUT_ENV = "ARADALS_TF_CLUSTER_TIMEOUT"
DEFAULT_STARTUP_TIMEOUT = 300

WorkerRole = collections.namedtuple("WorkerRole", ["index", "count", "is_chief"])


class ClusterError(ConnectionError):
    """A worker did not come up, or one went down during training."""


def _fail(message):
    raise ValueError(f"TF_CONFIG: {message}")


def parse_tf_config(text):
    """Checks a `TF_CONFIG` value and returns it as a dict.

    Args:
        text: the variable's value (JSON).

    Returns:
        The parsed dict: `{"cluster": {job: ["host:port", ...]}, "task":
        {"type": job, "index": i}}`.

    Raises:
        ValueError: with a one-line reason, for anything that is not a valid
            multi-worker configuration (parameter servers and evaluators are
            not supported: `MultiWorkerMirroredStrategy` trains on workers).

    Example:

    >>> parse_tf_config('{"cluster": {"worker": ["a:1", "b:2"]}, '
    ...                 '"task": {"type": "worker", "index": 1}}')["task"]["index"]
    1
    """
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        _fail(f"not valid JSON ({error.msg} at character {error.pos}).")
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        _fail('expected {"cluster": {"worker": ["host:port", ...]}, "task": {...}}.')
    cluster, task = config["cluster"], config["task"]
    if not isinstance(cluster, dict) or not cluster:
        _fail('"cluster" must map job names to lists of "host:port".')
    unsupported = sorted(set(cluster) - {"chief", "worker"})
    if unsupported:
        _fail(
            f"job {unsupported[0]!r} is not supported: MultiWorkerMirroredStrategy "
            'trains on "worker" (and at most one "chief") tasks.'
        )
    addresses = []
    for job, tasks in cluster.items():
        if not isinstance(tasks, list) or not tasks:
            _fail(f'cluster["{job}"] must be a non-empty list of "host:port".')
        for address in tasks:
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                _fail(f'{address!r} in cluster["{job}"] is not "host:port".')
            addresses.append(address)
    if len(set(addresses)) != len(addresses):
        _fail("two tasks share an address; every task needs its own host:port.")
    if len(cluster.get("chief", [])) > 1:
        _fail('at most one "chief" task.')
    if not isinstance(task, dict) or task.get("type") not in cluster:
        _fail(f'"task" must name a job of the cluster ({", ".join(sorted(cluster))}).')
    index = task.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        _fail('"task" needs an integer "index".')
    if not 0 <= index < len(cluster[task["type"]]):
        _fail(
            f'task index {index} is out of range: cluster["{task["type"]}"] has '
            f"{len(cluster[task['type']])} tasks."
        )
    return config


def loopback_tf_configs(count):
    """`TF_CONFIG` values of a `count`-worker cluster on 127.0.0.1, one per worker.

    For trying multi-worker training on one machine (and for tests): each
    worker gets a free port. A port could in principle be taken by another
    program between this call and the workers' start.

    Args:
        count: the number of workers.

    Returns:
        A list of `count` JSON strings, worker `i`'s at index `i`.

    Example:

    >>> configs = loopback_tf_configs(2)
    >>> json.loads(configs[1])["task"]
    {'type': 'worker', 'index': 1}
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return [
        json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}})
        for i in range(count)
    ]


def _startup_timeout():
    value = os.environ.get(STARTUP_TIMEOUT_ENV, str(DEFAULT_STARTUP_TIMEOUT))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ValueError(f"{STARTUP_TIMEOUT_ENV} must be a number of seconds > 0; got {value!r}.")
    return seconds


@functools.cache
def multi_worker_strategy():
    """This process's `MultiWorkerMirroredStrategy`, built once.

    The cluster comes from `TF_CONFIG` (checked first; without it, one worker
    on the local devices). A worker waits at most `ARADALS_TF_CLUSTER_TIMEOUT`
    seconds (default 300) for the others; a peer that dies later stops
    sending the coordination service's heartbeats, which aborts every
    collective. Either way the worker ends with an error instead of a hang
    (`translate_cluster_errors` words it).

    Returns:
        The `tf.distribute.MultiWorkerMirroredStrategy`.

    Raises:
        ValueError: a malformed `TF_CONFIG`.
        ClusterError: the workers did not all come up in time.
    """
    if os.environ.get("TF_CONFIG"):
        parse_tf_config(os.environ["TF_CONFIG"])
    timeout = _startup_timeout()
    _fix_keras_multi_worker()
    message = (
        f"not every worker came up within {timeout:g} s: start all workers of "
        "TF_CONFIG's cluster, each with the same cluster list and its own task "
        f"index (or raise {STARTUP_TIMEOUT_ENV})."
    )
    with _watchdog(timeout, message), translate_cluster_errors():
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except tf.errors.UnknownError as error:
            if "Could not start gRPC server" not in str(error):
                raise
            raise ClusterError(
                "cannot listen on this worker's TF_CONFIG address: the port is in use "
                "or the host is not this machine."
            ) from None


# Run by the watchdog process: wait, then report and end the parent, unless
# the parent finished (and killed the watchdog) or died first.
_WATCHDOG = """
import os, sys, time
parent, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    time.sleep(0.2)
    if os.getppid() != parent:
        sys.exit(0)
sys.stderr.write(sys.argv[3] + "\\n")
sys.stderr.flush()
os.kill(parent, 9)
"""


@contextlib.contextmanager
def _watchdog(timeout, message):
    """Ends this process with `Error: message` if the block runs past `timeout` s.

    TensorFlow connects to every peer before the strategy exists and waits
    for them without a limit, in C++ that holds the interpreter and outlives
    SIGTERM: no exception, thread or Python signal handler can end that wait,
    so a separate process does. Nothing has been written at that point.
    """
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout), f"Error: {message}"],
        stdin=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        watchdog.kill()
        watchdog.wait()


@contextlib.contextmanager
def translate_cluster_errors():
    """Turns TensorFlow's errors for a lost or mismatched peer into `ClusterError`."""
    try:
        yield
    except tf.errors.InternalError as error:
        if "joining a group with size" not in str(error):
            raise
        raise ClusterError(
            "the workers disagree on the cluster's size: give every worker the same "
            "TF_CONFIG cluster list (only the task index differs)."
        ) from None
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
        # Only a collective's or a peer's failure: the same error types also
        # come from elsewhere (a remote file system, for one).
        if "ollective" not in str(error) and "/job:" not in str(error):
            raise
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        telling = [line for line in lines if "unhealthy" in line or "aborted" in line]
        first = (telling or lines or [""])[0]
        raise ClusterError(
            "a worker is unreachable or stopped during training "
            f"({type(error).__name__}: {first[:200]}); restart every worker with "
            "the same command: training resumes from the last finished epoch."
        ) from None


def worker_role(strategy=None):
    """This process's place among the workers of `strategy`.

    Args:
        strategy: a `tf.distribute.Strategy` (default: the current one).

    Returns:
        `WorkerRole(index, count, is_chief)`; `(0, 1, True)` for strategies
        that run in one process.
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return WorkerRole(0, 1, True)
    jobs = [job for job in ("chief", "worker") if job in spec]
    order = [(job, i) for job in jobs for i in range(len(spec[job]))]
    me = (resolver.task_type, int(resolver.task_id))
    index = order.index(me) if me in order else 0
    return WorkerRole(index, len(order), index == 0)


def sum_across_workers(value, strategy=None):
    """The element-wise sum of `value` over the processes of `strategy`.

    Every process passes its own array (for example statistics of its shard
    of the validation data) and gets the same sum back; with one process,
    `value` itself. Call it from every worker at the same point (a
    collective), outside `strategy.run`.

    Args:
        value: a numeric array, the same shape and dtype on every worker.
        strategy: a `tf.distribute.Strategy` (default: the current one).

    Returns:
        A numpy array: the sum over workers.
    """
    strategy = strategy or tf.distribute.get_strategy()
    value = np.asarray(value)
    if worker_role(strategy).count == 1:
        return value
    local = strategy.extended.worker_devices
    tensor = tf.constant(value)

    def place(context):
        # The process's value on its first replica, zeros on the others, so
        # that the all-reduce sums over processes, not over devices.
        first = context.replica_id_in_sync_group % len(local) == 0
        return tensor if first else tf.zeros_like(tensor)

    per_replica = strategy.experimental_distribute_values_from_function(place)
    with translate_cluster_errors():
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return np.asarray(total)


@functools.cache
def _fix_keras_multi_worker():
    """Patches the two Keras 3 functions that fail under `MultiWorkerMirroredStrategy`."""
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    def is_multi_worker(strategy):
        return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None and is_multi_worker(strategy):
            # The build needs shapes only: this worker's first replica batch
            # has them, and taking it needs no collective.
            for _, _, batches in iterator:
                batch = next(batches)
                data_batch = tree.map_structure(
                    lambda v: (
                        strategy.experimental_local_results(v)[0]
                        if isinstance(v, tf.distribute.DistributedValues)
                        else v
                    ),
                    batch,
                )
                break
            iterator = None
        return build(self, iterator=iterator, data_batch=data_batch)

    reduce_per_replica = trainer.reduce_per_replica

    def reduce_scalars_per_replica(values, strategy, reduction):
        if is_multi_worker(strategy) and reduction in ("auto", "mean"):
            # Keras reduces with axis=0, which a scalar log does not have.
            def reduce(value):
                local = strategy.experimental_local_results(value)[0]
                if local.shape.rank == 0:
                    return strategy.reduce("MEAN", value, axis=None)
                return reduce_per_replica(value, strategy, reduction)

            return tree.map_structure(reduce, values)
        return reduce_per_replica(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_scalars_per_replica
