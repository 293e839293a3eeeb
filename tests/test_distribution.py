"""Multi-worker training with real processes on 127.0.0.1, a killed worker, bad clusters.

The workers run `tests/distributed_worker.py` (AR-AdaLS on digits with the
attack and both score caches); each test bounds every process with a timeout
and kills whatever is left, so a hang fails the test instead of the suite.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from aradals_tf import distribution

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
EPOCHS = 4
LIMIT_S = 240


def _start(spec, tf_config=None, **env):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    environment.pop("TF_CONFIG", None)
    if tf_config is not None:
        environment["TF_CONFIG"] = tf_config
    return subprocess.Popen(
        [sys.executable, WORKER, json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,
    )


def _finish(processes, limit=LIMIT_S):
    """Waits for every process (killing all of them past `limit` s); returns their outputs."""
    deadline = time.monotonic() + limit
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append((process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    # Anything still running in a process's group (a watchdog, a child) is a
    # stray; a member that is just exiting gets a moment to go.
    strays = []
    for process in processes:
        deadline = time.monotonic() + 5
        while _running_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _running_members(process.pid):
            strays.append(process.pid)
            os.killpg(process.pid, signal.SIGKILL)
    assert not strays, f"processes left behind by {strays}"
    return outputs


def _running_members(group):
    """Processes of a process group that are not zombies (Linux /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgid = fields[0], int(fields[2])
        if pgid == group and state != "Z":
            members.append(int(entry))
    return members


def _two_workers(tmp, name, tf_configs, pause_at=None):
    """Both workers of one cluster, with the same run directory (as users run
    them), each with a temporary directory of its own to check for leftovers."""
    processes = []
    for index in range(2):
        spec = {
            "strategy": "multiworker",
            "out": str(tmp / name / "run"),
            "dump": str(tmp / name / f"worker{index}.npz"),
            "epochs": EPOCHS,
        }
        if pause_at is not None and index == 1:
            spec["pause_at"] = pause_at
        scratch = tmp / name / f"tmp{index}"
        scratch.mkdir(exist_ok=True)
        processes.append(_start(spec, tf_configs[index], TMPDIR=str(scratch)))
    return processes


def _states(tmp, name):
    return [dict(np.load(tmp / name / f"worker{i}.npz")) for i in range(2)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Two workers trained to the end, and a one-process MirroredStrategy run on
    two logical devices with the same global batches."""
    tmp = tmp_path_factory.mktemp("distributed")
    (tmp / "two").mkdir()
    (tmp / "mirrored").mkdir()
    started = time.monotonic()
    processes = _two_workers(tmp, "two", distribution.loopback_tf_configs(2))
    outputs = _finish(processes)
    for code, _, err in outputs:
        assert code == 0, err[-3000:]
    seconds = time.monotonic() - started
    mirrored = _start(
        {
            "strategy": "mirrored",
            "out": str(tmp / "mirrored" / "run"),
            "dump": str(tmp / "mirrored" / "state.npz"),
            "epochs": EPOCHS,
        }
    )
    ((code, _, err),) = _finish([mirrored])
    assert code == 0, err[-3000:]
    return tmp, seconds


def test_two_workers_agree_with_each_other_and_with_mirrored_strategy(uninterrupted):
    tmp, seconds = uninterrupted
    first, second = _states(tmp, "two")
    for key in first:  # identical on both workers, bit for bit
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    # eps moved away from its start, per stratum: the test sees the update work.
    assert not np.allclose(first["eps"], 0.3) and first["eps"].min() > 0
    assert (first["cache"] >= 0).all()  # every training example scored
    reference = dict(np.load(tmp / "mirrored" / "state.npz"))
    # Same global batches, each split in two halves: the same updates up to
    # the order of float sums in the all-reduce.
    np.testing.assert_allclose(first["weights"], reference["weights"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(first["eps"], reference["eps"], atol=1e-5)
    np.testing.assert_array_equal(first["thresholds"], reference["thresholds"])
    np.testing.assert_array_equal(first["cache"], reference["cache"])
    # The chief wrote the run directory, nothing half-written is left, and the
    # other worker's temporary copy is gone.
    assert (tmp / "two" / "run" / "model.keras").is_file()
    assert sorted(p.name for p in (tmp / "two").iterdir()) == [
        "run",
        "tmp0",
        "tmp1",
        "worker0.npz",
        "worker1.npz",
    ]
    assert not list((tmp / "two" / "tmp1").iterdir())
    assert seconds < 180


def test_killed_worker_resumes_from_its_last_epoch(uninterrupted, tmp_path):
    """A real SIGKILL mid-epoch: the other worker stops with an error, both are
    started again, and training ends where the uninterrupted run ended."""
    tmp, _ = uninterrupted
    (tmp_path / "killed").mkdir()
    # Worker 1 pauses in the middle of the third epoch (index 2); worker 0 then
    # waits in the step's all-reduce. Two epochs are backed up by then.
    tf_configs = distribution.loopback_tf_configs(2)
    processes = _two_workers(tmp_path, "killed", tf_configs, pause_at=[2, 3])
    marker = tmp_path / "killed" / "worker1.npz.paused"
    deadline = time.monotonic() + LIMIT_S
    while not marker.exists() and time.monotonic() < deadline:
        assert processes[1].poll() is None, processes[1].communicate()[1][-3000:]
        time.sleep(0.2)
    assert marker.exists(), "worker 1 never reached the pause"
    backups = sorted(p.name for p in (tmp_path / "killed" / ".run.backup").iterdir())
    assert backups == ["epoch-00001", "epoch-00002"]
    os.kill(processes[1].pid, signal.SIGKILL)
    (survivor, _, survivor_err), (killed, _, _) = _finish(processes, limit=120)
    assert killed == -signal.SIGKILL
    assert survivor != 0 and "restart every worker" in survivor_err
    # The restart: the same command on both workers, no pause this time.
    for code, _, err in _finish(_two_workers(tmp_path, "killed", tf_configs)):
        assert code == 0, err[-3000:]
    resumed = _states(tmp_path, "killed")
    reference = _states(tmp, "two")[0]
    np.testing.assert_array_equal(resumed[0]["weights"], resumed[1]["weights"])
    # Restored weights, optimizer, eps, thresholds, training and validation
    # score caches: the same computation as the uninterrupted run.
    np.testing.assert_allclose(resumed[0]["weights"], reference["weights"], atol=1e-5)
    np.testing.assert_allclose(resumed[0]["eps"], reference["eps"], atol=1e-6)
    np.testing.assert_array_equal(resumed[0]["thresholds"], reference["thresholds"])
    np.testing.assert_array_equal(resumed[0]["cache"], reference["cache"])
    assert not (tmp_path / "killed" / ".run.backup").exists()
    assert (tmp_path / "killed" / "run" / "model.keras").is_file()


def _cli(tf_config, timeout=60, **env):
    environment = {**os.environ, "TF_CONFIG": tf_config, **env}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "aradals-tf"),
            "train",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--strategy",
            "multiworker",
            "--out",
            os.path.join(env.get("OUT_DIR", "/nonexistent"), "run"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,
    )


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", "not valid JSON"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', '"task"'),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
            "out of range",
        ),
        ('{"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}', "not supported"),
    ],
)
def test_malformed_tf_config_is_one_line_error(tf_config, message, tmp_path):
    ((code, out, err),) = _finish([_cli(tf_config, OUT_DIR=str(tmp_path))], limit=60)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: TF_CONFIG") and message in lines[0]


def test_missing_or_miscounted_workers_end_within_the_timeout(tmp_path):
    """A worker whose peer never comes up, and two workers that disagree on
    the cluster's size: each ends with the one-line error, none hangs."""
    three = distribution.loopback_tf_configs(3)
    addresses = json.loads(three[0])["cluster"]["worker"]
    two = json.dumps({"cluster": {"worker": addresses[:2]}, "task": {"type": "worker", "index": 0}})
    timeout = {"ARADALS_TF_CLUSTER_TIMEOUT": "8"}
    # Worker 0 of a cluster of two whose worker 1 never starts.
    alone = _cli(distribution.loopback_tf_configs(2)[0], OUT_DIR=str(tmp_path / "a"), **timeout)
    # Worker 0 of a cluster of two; worker 1 thinks there are three.
    pair = [
        _cli(two, OUT_DIR=str(tmp_path / "b"), **timeout),
        _cli(three[1], OUT_DIR=str(tmp_path / "c"), **timeout),
    ]
    started = time.monotonic()
    outputs = _finish([alone, *pair], limit=90)
    assert time.monotonic() - started < 90
    messages = []
    for code, _, err in outputs:
        assert code != 0
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), err[-2000:]
        messages.append(lines[0])
    assert "came up within 8 s" in messages[0]
    # The pair: worker 1 waits for a third worker, or both see the mismatch.
    assert all("came up" in m or "disagree on the cluster's size" in m for m in messages[1:])
    for directory in ("a", "b", "c"):
        assert not (tmp_path / directory / "run").exists()


def test_parse_tf_config_accepts_a_chief_and_workers():
    config = distribution.parse_tf_config(
        json.dumps(
            {
                "cluster": {"chief": ["h0:2222"], "worker": ["h1:2222", "h2:2222"]},
                "task": {"type": "worker", "index": 1},
            }
        )
    )
    assert config["task"] == {"type": "worker", "index": 1}
    with pytest.raises(ValueError, match="share an address"):
        distribution.parse_tf_config(
            '{"cluster": {"worker": ["h:1", "h:1"]}, "task": {"type": "worker", "index": 0}}'
        )
    with pytest.raises(ValueError, match="host:port"):
        distribution.parse_tf_config(
            '{"cluster": {"worker": ["h"]}, "task": {"type": "worker", "index": 0}}'
        )


def test_sum_across_workers_is_the_value_in_one_process():
    value = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(distribution.sum_across_workers(value), value)
    assert distribution.worker_role() == distribution.WorkerRole(0, 1, True)


def test_loopback_tf_configs_are_a_valid_cluster_with_distinct_ports():
    configs = [distribution.parse_tf_config(c) for c in distribution.loopback_tf_configs(3)]
    addresses = configs[0]["cluster"]["worker"]
    assert len(set(addresses)) == 3 and all(a.startswith("127.0.0.1:") for a in addresses)
    assert [c["task"]["index"] for c in configs] == [0, 1, 2]
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)


def test_one_strategy_per_process():
    """Collectives are configured once per process: every run shares one strategy."""
    from aradals_tf.experiments import build

    assert build.make_strategy("mirrored") is build.make_strategy("mirrored")


def test_cluster_errors_are_translated_and_others_left_alone():
    import tensorflow as tf

    aborted = tf.errors.UnavailableError(
        None,
        None,
        "Graph execution error:\n\nCollective ops is aborted by: the following tasks are unhealthy "
        "(stopped sending heartbeats): /job:worker/replica:0/task:1",
    )
    with pytest.raises(distribution.ClusterError, match="unhealthy.*restart every worker"):
        with distribution.translate_cluster_errors():
            raise aborted
    mismatch = tf.errors.InternalError(None, None, "Device is joining a group with size3, but ...")
    with pytest.raises(distribution.ClusterError, match="disagree on the cluster's size"):
        with distribution.translate_cluster_errors():
            raise mismatch
    # The same error types from elsewhere are not a cluster's.
    for error in (
        tf.errors.UnavailableError(None, None, "storage.example.com: connection refused"),
        tf.errors.InternalError(None, None, "something else"),
    ):
        with pytest.raises(type(error)):
            with distribution.translate_cluster_errors():
                raise error
