"""Two processes on localhost (CPU, gloo) train one GLCIC and end in agreement."""

import os
import socket
import subprocess
import sys

import numpy as np

from inpaint_jax import checkpointing
from inpaint_jax.data import sources

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiprocess_worker.py")


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_worker(args, process_id=None, num_processes=None, port=None):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(key, None)
    if process_id is not None:
        env.update(
            JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
            JAX_NUM_PROCESSES=str(num_processes),
            JAX_PROCESS_ID=str(process_id),
        )
    return subprocess.Popen(
        [sys.executable, WORKER, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_processes_train_identically_and_one_process_resumes(photo_dir, tmp_path):
    data_dir, workdir = tmp_path / "tfds", tmp_path / "work"
    sources.build_dataset("image_folder", data_dir=str(data_dir), manual_dir=photo_dir)
    port = free_port()
    outs = [tmp_path / f"process{i}.npz" for i in range(2)]
    procs = [start_worker((photo_dir, data_dir, workdir, outs[i], 4), i, 2, port) for i in range(2)]
    for proc in procs:
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output

    params = [np.load(out) for out in outs]
    assert [int(p["process"]) for p in params] == [0, 1]
    assert all(int(p["count"]) == 2 for p in params)
    leaves = [k for k in params[0].files if k.startswith("arr_")]
    for key in leaves:
        np.testing.assert_array_equal(params[0][key], params[1][key])
    ckpt = checkpointing.Checkpointer(str(workdir / "checkpoints"))
    assert ckpt.all_steps() == [2, 4]
    data_states = sorted(
        f for f in os.listdir(workdir / "checkpoints" / "4" / "data_state") if f.endswith(".json")
    )
    assert data_states == ["process_0-of-2.json", "process_1-of-2.json"]

    single = start_worker((photo_dir, data_dir, workdir, tmp_path / "single.npz", 6))
    output, _ = single.communicate(timeout=600)
    assert single.returncode == 0, output
    assert "written by 2 processes, this run has 1" in output
    assert checkpointing.Checkpointer(str(workdir / "checkpoints")).all_steps()[-1] == 6
