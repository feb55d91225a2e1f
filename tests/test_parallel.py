"""Tests for inpaint_jax.parallel on the 8 fake CPU devices set up in conftest.py."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec

from inpaint_jax import parallel

LAUNCHER_VARIABLES = (
    "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_STEP_NODELIST",
    "SLURM_NTASKS", "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "TPU_PROCESS_ADDRESSES",
    "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS",
)


@pytest.fixture(scope="module")
def mesh():
    return parallel.create_mesh()


@pytest.fixture(scope="module")
def single_device_mesh():
    return parallel.create_mesh(jax.devices()[:1])


def _local_batch(batch_size=16):
    rng = np.random.default_rng(0)
    return {
        "image": rng.uniform(size=(batch_size, 4, 4, 3)).astype(np.float32),
        "local_box": rng.integers(0, 100, size=(batch_size, 4)).astype(np.int32),
        "valid": np.arange(batch_size) < batch_size - 3,
    }


def test_mesh_spans_all_devices_on_one_data_axis(mesh, single_device_mesh):
    assert mesh.devices.size == 8 == jax.device_count()
    assert mesh.axis_names == ("data",)
    assert mesh.axis_types == (AxisType.Auto,)
    assert single_device_mesh.devices.size == 1


def test_shardings(mesh):
    assert parallel.data_sharding(mesh).spec == PartitionSpec("data")
    assert parallel.replicated_sharding(mesh).spec == PartitionSpec()


def test_make_global_batch_shards_every_leaf_on_the_batch_axis(mesh):
    local = _local_batch()
    global_batch = parallel.make_global_batch(local, mesh)
    assert set(global_batch) == set(local)
    for name, array in global_batch.items():
        assert array.shape == local[name].shape
        assert array.dtype == local[name].dtype
        assert array.sharding.is_equivalent_to(parallel.data_sharding(mesh), array.ndim)
        np.testing.assert_array_equal(np.asarray(array), local[name])
        shards = array.addressable_shards
        assert len(shards) == 8
        for shard in shards:
            assert shard.data.shape[0] == 2
            np.testing.assert_array_equal(np.asarray(shard.data), local[name][shard.index])


def test_make_global_batch_rejects_batches_that_do_not_split_over_devices(mesh):
    with pytest.raises(ValueError, match="'image'.*multiple of the 8 devices"):
        parallel.make_global_batch({"image": np.zeros((12, 2, 2, 3), np.float32)}, mesh)
    with pytest.raises(ValueError, match="'step'"):
        parallel.make_global_batch({"step": np.float32(3.0)}, mesh)


def test_replicated_sharding_puts_a_full_copy_on_every_device(mesh):
    tree = {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(3, np.float32)}
    replicated = jax.device_put(tree, parallel.replicated_sharding(mesh))
    for name, array in replicated.items():
        assert array.sharding.is_fully_replicated
        assert len(array.addressable_shards) == 8
        for shard in array.addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data), tree[name])


def test_per_process_batch_size(mesh, single_device_mesh):
    assert parallel.per_process_batch_size(16, mesh) == 16
    assert parallel.per_process_batch_size(3, single_device_mesh) == 3
    message = "global batch size 10 is not divisible by the 8 devices.*multiple of 8"
    with pytest.raises(ValueError, match=message):
        parallel.per_process_batch_size(10, mesh)
    with pytest.raises(ValueError, match="global batch size 0"):
        parallel.per_process_batch_size(0, mesh)


class _ConvBatchNorm(nn.Module):
    """Conv -> BatchNorm (momentum 0, so running stats equal the last batch's) -> ReLU -> Dense."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        features = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.0)(features)
        return nn.Dense(2)(nn.relu(x).mean(axis=(1, 2))), features


def _train_step_on(mesh, variables, images):
    """Loss, gradients, new batch stats and conv features of one train-mode step, jitted over ``mesh``."""
    model = _ConvBatchNorm()

    def step(variables, images):
        def loss_fn(params):
            (outputs, features), updates = model.apply(
                {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
            )
            return jnp.mean(jnp.square(outputs)), (updates["batch_stats"], features)

        (loss, (batch_stats, features)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            variables["params"]
        )
        return loss, grads, batch_stats, features

    replicated = parallel.replicated_sharding(mesh)
    sharded = parallel.data_sharding(mesh)
    jitted = jax.jit(
        step,
        in_shardings=(replicated, sharded),
        out_shardings=(replicated, replicated, replicated, sharded),
    )
    return jitted(
        jax.device_put(variables, replicated),
        parallel.make_global_batch({"image": images}, mesh)["image"],
    )


def test_sharded_train_step_with_batchnorm_matches_a_single_device(mesh, single_device_mesh):
    rng = np.random.default_rng(1)
    # Each device's two rows get a different offset, so per-device statistics differ.
    images = (rng.normal(size=(16, 6, 6, 3)) + np.repeat(np.arange(8), 2)[:, None, None, None])
    images = images.astype(np.float32)
    variables = _ConvBatchNorm().init(jax.random.key(0), images[:2], train=False)

    loss8, grads8, stats8, features8 = _train_step_on(mesh, variables, images)
    loss1, grads1, stats1, _ = _train_step_on(single_device_mesh, variables, images)

    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads8, grads1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stats8, stats1)

    # The statistics are those of the global batch, not of any one device's shard.
    features = np.asarray(features8)
    global_mean = features.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(stats8["BatchNorm_0"]["mean"], global_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats8["BatchNorm_0"]["var"], features.var(axis=(0, 1, 2)), rtol=1e-4)
    first_device_mean = features[:2].mean(axis=(0, 1, 2))
    assert not np.allclose(first_device_mean, global_mean, atol=1e-2)


@pytest.mark.parametrize(
    "environ, launcher",
    [
        ({}, None),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "JAX_COORDINATOR_ADDRESS"),
        ({"SLURM_STEP_NODELIST": "node[1-4]", "SLURM_NTASKS": "4"}, "slurm"),
        ({"SLURM_STEP_NODELIST": "node1", "SLURM_NTASKS": "1"}, None),
        ({"SLURM_NTASKS": "4"}, None),
        ({"OMPI_MCA_orte_hnp_uri": "123;tcp://10.0.0.1:5", "OMPI_COMM_WORLD_SIZE": "2"}, "openmpi"),
        ({"OMPI_MCA_orte_hnp_uri": "123;tcp://10.0.0.1:5", "OMPI_COMM_WORLD_SIZE": "1"}, None),
        ({"TPU_WORKER_HOSTNAMES": "host-0,host-1"}, "tpu_pod"),
        ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),
        ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.1"}, "tpu_multislice"),
    ],
)
def test_detect_multiprocess_launcher(environ, launcher):
    assert parallel.detect_multiprocess_launcher(environ) == launcher


def test_detect_multiprocess_launcher_rejects_non_integer_counts():
    with pytest.raises(ValueError, match="SLURM_NTASKS='many'"):
        parallel.detect_multiprocess_launcher({"SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "many"})


@pytest.fixture
def fake_distributed(monkeypatch):
    """Clears launcher variables and records calls to jax.distributed.initialize."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    return calls


def test_initialize_distributed_is_a_no_op_on_a_single_machine(fake_distributed):
    assert parallel.initialize_distributed() is False
    assert fake_distributed == []


def test_initialize_distributed_uses_the_coordinator_environment(fake_distributed, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    assert parallel.initialize_distributed() is True
    assert fake_distributed == [{"coordinator_address": None, "num_processes": 4, "process_id": 2}]


def test_initialize_distributed_with_explicit_arguments_or_force(fake_distributed):
    assert parallel.initialize_distributed("10.0.0.1:1234", num_processes=2, process_id=0)
    assert parallel.initialize_distributed(force=True)
    assert fake_distributed == [
        {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 0},
        {"coordinator_address": None, "num_processes": None, "process_id": None},
    ]
