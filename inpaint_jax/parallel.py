"""Data parallelism on a one-axis device mesh, single- or multi-process.

The batch is sharded over the mesh axis ``"data"`` and parameters are
replicated; computations are ``jax.jit`` functions whose inputs carry these
shardings, so XLA inserts the cross-device reductions (including BatchNorm
statistics over the global batch) by itself. Each process feeds its own slice
of the global batch through :func:`make_global_batch`.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``"data"`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices
    )


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits axis 0 (the batch) over the mesh's ``"data"`` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def _process_count(mesh: Mesh) -> int:
    """Number of processes that own devices of ``mesh``."""
    return len({device.process_index for device in mesh.devices.flat})


def per_process_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """The share of ``global_batch_size`` that each process loads.

    Raises ValueError unless the global batch divides evenly over the mesh's
    devices (and hence over its processes).
    """
    device_count = mesh.devices.size
    if global_batch_size <= 0 or global_batch_size % device_count:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the "
            f"{device_count} devices of the mesh; use a positive multiple of {device_count}"
        )
    return global_batch_size // _process_count(mesh)


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's batch into global arrays sharded on axis 0.

    Every leaf (any rank >= 1) holds this process's examples on axis 0; the
    result's axis 0 is the concatenation over processes, split evenly over
    the devices of the mesh.
    """
    sharding = data_sharding(mesh)
    local_device_count = len(mesh.local_devices)
    for name, array in local_batch.items():
        shape = np.shape(array)
        if not shape or shape[0] % local_device_count:
            raise ValueError(
                f"batch entry {name!r} has shape {shape}; its leading (batch) axis must "
                f"be a multiple of the {local_device_count} devices this process feeds"
            )
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(array))
        for name, array in local_batch.items()
    }


def _int_from_env(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    """Integer value of environment variable ``name``, or ``default`` when unset."""
    value = environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r} must be an integer; fix or unset it"
        ) from None


def detect_multiprocess_launcher(environ: Mapping[str, str] | None = None) -> str | None:
    """Names the multi-process launcher found in the environment, or None.

    Detected, in order:
    - ``JAX_COORDINATOR_ADDRESS`` set (manual set-up; also set
      ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``);
    - Slurm: ``SLURM_STEP_NODELIST`` set and ``SLURM_NTASKS`` > 1 (an ``srun``
      step with several tasks);
    - Open MPI: ``OMPI_MCA_orte_hnp_uri`` set and ``OMPI_COMM_WORLD_SIZE`` > 1;
    - Cloud TPU pods: ``TPU_PROCESS_ADDRESSES`` or ``TPU_WORKER_HOSTNAMES``
      listing more than one host, or ``MEGASCALE_COORDINATOR_ADDRESS`` set
      (multislice).
    A TPU pod on plain GCE VMs without these variables is not detected; pass
    ``force=True`` to :func:`initialize_distributed` there.
    """
    environ = os.environ if environ is None else environ
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    if "SLURM_STEP_NODELIST" in environ and _int_from_env(environ, "SLURM_NTASKS", 0) > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in environ and _int_from_env(environ, "OMPI_COMM_WORLD_SIZE", 0) > 1:
        return "openmpi"
    hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
    if len([host for host in hosts.split(",") if host.strip()]) > 1:
        return "tpu_pod"
    if environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu_multislice"
    return None


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    force: bool = False,
) -> bool:
    """Starts ``jax.distributed`` when running as one of several processes.

    Must be called before any other JAX call. It initialises when explicit
    arguments are given, when ``force`` is set, or when
    :func:`detect_multiprocess_launcher` finds a cluster launcher; otherwise
    (a laptop, a single-GPU box) it does nothing. Unset arguments are taken
    from ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` when those are set, and
    otherwise left to JAX's own cluster auto-detection. Calling it again after
    a successful initialisation is a no-op. Returns True when the distributed
    system is running.
    """
    if jax.distributed.is_initialized():
        return True
    explicit = coordinator_address is not None or num_processes is not None or process_id is not None
    launcher = detect_multiprocess_launcher()
    if not (explicit or force or launcher):
        return False
    if num_processes is None:
        num_processes = _int_from_env(os.environ, "JAX_NUM_PROCESSES", None)
    if process_id is None:
        process_id = _int_from_env(os.environ, "JAX_PROCESS_ID", None)
    logging.info("initialising jax.distributed (launcher: %s)", launcher or "explicit")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    return True
