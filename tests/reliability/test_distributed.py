"""TargetedDropout, RampingCallback, TriangularDropout and pruning under
TensorFlow's distribution strategies.

`distributed_worker.py` runs the jobs in fresh processes (the CPU has to be
split into logical devices, or TF_CONFIG read, before TensorFlow initialises
its devices): one process with MirroredStrategy over two logical CPUs, and
two worker processes of one MultiWorkerMirroredStrategy cluster on loopback.
All three start at once and are collected by one fixture.
"""

import json
import os
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_tdrop.layers.triangular_dropout import triangular_widths
from tests.tolerance import approx

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
TIMEOUT = 900
RATES = ("0.0/0.0", "0.5/0.5")

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.distribute strategies need the tensorflow backend",
)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def spawn(mode, out, log, tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, WORKER, mode, str(out)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(WORKER))),
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    jobs = {"mirrored": ("mirrored", None)}
    for index in range(2):
        task = {"type": "worker", "index": index}
        jobs[f"worker{index}"] = (
            "multiworker",
            {"cluster": cluster, "task": task},
        )
    procs = {}
    for name, (mode, tf_config) in jobs.items():
        log = open(tmp / f"{name}.log", "w")
        procs[name] = (spawn(mode, tmp / f"{name}.json", log, tf_config), log)
    deadline = time.monotonic() + TIMEOUT
    try:
        for proc, _ in procs.values():
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc, log in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    found = {}
    for name, (proc, _) in procs.items():
        out = tmp / f"{name}.json"
        if proc.returncode != 0 or not out.exists():
            tail = (tmp / f"{name}.log").read_text()[-3000:]
            pytest.fail(f"{name} exited with {proc.returncode}:\n{tail}")
        found[name] = json.loads(out.read_text())
    return found


def max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(a, b)
    )


@pytest.mark.parametrize("job", ["mirrored", "worker0", "worker1"])
def test_two_replicas_in_sync(results, job):
    assert results[job]["num_replicas"] == 2


@pytest.mark.parametrize("job", ["mirrored", "worker0", "worker1"])
@pytest.mark.parametrize("rates", RATES)
def test_distributed_run_equals_single_device_run(results, job, rates):
    # Same seed, same global batches: the replicas draw the same noise (the
    # seed generator's state is a mirrored variable), so even at rate 0.5
    # the run matches one device, up to the order of the gradient sum.
    run = results[job]["runs"][rates]
    assert max_diff(run["weights"], run["single_weights"]) < 1e-6


@pytest.mark.parametrize("job", ["mirrored", "worker0", "worker1"])
def test_ramp_variables_identical_across_replicas(results, job):
    run = results[job]["runs"]["0.5/0.5"]
    # 8 steps, ramp (4, 12): the last batch began at step 7.
    alpha = 0.5 * 7 / 12
    gamma = 0.5 * (0.95 + 0.05 * (7 - 4) / (12 - 4))
    for name in ("td1", "td2"):
        state = run["ramp"][name]
        assert state["rate"] == approx([alpha] * len(state["rate"]))
        assert state["target_rate"] == approx(
            [gamma] * len(state["target_rate"])
        )
        # One noise draw per step: the generator's counter is at 8 on
        # every replica, as on one device.
        assert [s[1] for s in state["seed_state"]] == [8] * len(
            state["seed_state"]
        )
        single = run["single_ramp"][name]
        assert state["seed_state"] == single["seed_state"] * len(
            state["seed_state"]
        )
        assert state["rate"] == single["rate"] * len(state["rate"])
        assert state["target_rate"] == single["target_rate"] * len(
            state["target_rate"]
        )


def test_both_workers_hold_the_same_weights(results):
    for rates in RATES:
        w0 = results["worker0"]["runs"][rates]["weights"]
        w1 = results["worker1"]["runs"][rates]["weights"]
        assert max_diff(w0, w1) == 0.0


@pytest.mark.parametrize("job", ["mirrored", "worker0", "worker1"])
def test_pruning_a_model_built_in_the_strategy_scope(results, job):
    report = results[job]["pruning"]
    assert len(report) == 2  # td1 and td2 kernels; logits excluded
    for entry in report.values():
        rows = entry["rows"]
        assert entry["kept_per_column"] == [rows - rows // 2] * len(
            entry["kept_per_column"]
        )
        assert entry["replicas"] == (2 if job == "mirrored" else 1)
        assert entry["replicas_equal_masked_before"]
        assert entry["copy_equals_masked_before"]


@pytest.mark.parametrize("job", ["mirrored", "worker0", "worker1"])
def test_triangular_mask_is_laid_out_per_replica(results, job):
    # The triangle spans each replica's own batch: a global batch of 8 over
    # two replicas gives every replica the full 4-row triangle, not rows
    # 2j and 2j+1 of one 8-row triangle as on one device.
    report = results[job]["triangular"]
    per_replica = keras.ops.convert_to_numpy(triangular_widths(4, 4))
    assert report["local_widths"] == [per_replica.tolist()] * (
        2 if job == "mirrored" else 1
    )
    one_device = keras.ops.convert_to_numpy(triangular_widths(8, 4))
    assert one_device.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert report["trained"]
    assert report["replicas_equal"]
