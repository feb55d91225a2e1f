"""One process of tests/test_multiprocess.py: a tiny GLCIC run under jax.distributed.

Usage: python tests/multiprocess_worker.py PHOTO_DIR DATA_DIR WORKDIR OUT.npz TOTAL_STEPS
with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set (or none of
them, for a single process). Writes this process's copy of the final generator
parameters to OUT.npz.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from helpers import tiny_config  # noqa: E402
from inpaint_jax import parallel  # noqa: E402
from inpaint_jax.trainers import glcic  # noqa: E402


def main(photo_dir, data_dir, workdir, out_path, total_steps):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    parallel.initialize_distributed()
    config = tiny_config(
        photo_dir, data_dir, total_steps=int(total_steps), checkpoint_every_steps=2
    )
    state = glcic.train_and_evaluate(config, workdir)
    local_copy = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state.g_params)
    leaves = jax.tree.leaves(local_copy)
    np.savez(out_path, process=jax.process_index(), count=jax.process_count(), *leaves)


if __name__ == "__main__":
    main(*sys.argv[1:])
