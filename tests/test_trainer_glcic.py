"""GLCIC trainer: phase steps, sharding equivalence, CLI runs, exact resume."""

import json
import os
import signal
import subprocess

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tests.helpers import REPO, launch_train_command, override, recipe_steps, tiny_config

from configs import glcic as glcic_config
from inpaint_jax import checkpointing, losses, parallel
from inpaint_jax.data import sources
from inpaint_jax.models import layers
from inpaint_jax.trainers import common
from inpaint_jax.trainers import glcic as trainer

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


def config_flags(config, keys):
    """`--config.x=y` command-line overrides for the listed dotted keys."""
    flags = []
    for key in keys:
        value = config
        for part in key.split("."):
            value = value[part]
        flags.append(f"--config.{key}={value}")
    return flags


TINY_KEYS = [
    "data.name",
    "data.manual_dir",
    "data.data_dir",
    "data.crop_size",
    "data.resize_range",
    "mask.local_size",
    "model.width_multiplier",
    "global_batch_size",
    "eval.global_batch_size",
    "completion_steps",
    "discriminator_steps",
    "total_steps",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
]


def run_train(config, workdir, devices=1, extra=(), **kwargs):
    """Runs `python -m launch.train` on `config` in a subprocess."""
    argv, env = launch_train_command(
        "configs/glcic.py:runlocal", workdir, [*config_flags(config, TINY_KEYS), *extra], devices
    )
    return subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def logged_scalars(workdir):
    """{step: {name: value}} of every training scalar in the workdir's event files."""
    import tensorflow as tf  # noqa: PLC0415  (heavy; only these tests need it)

    scalars = {}
    for name in sorted(os.listdir(workdir)):
        if not name.startswith("events.out"):
            continue
        for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
            for value in event.summary.value:
                if value.tag.startswith(("g_", "d_")):
                    scalars.setdefault(event.step, {})[value.tag] = float(
                        tf.make_ndarray(value.tensor)
                    )
    return scalars


# ---------------------------------------------------------------- in process


@pytest.fixture(scope="module")
def setup(photo_dir, tmp_path_factory):
    """Tiny config, a 1-device mesh, initial state, jitted-free step object, a batch."""
    config = tiny_config(photo_dir, str(tmp_path_factory.mktemp("tfds")))
    mesh = parallel.create_mesh(jax.devices()[:1])
    state, steps = recipe_steps(trainer, config, mesh)
    data = common.create_datasets(config, mesh)
    batch = next(data.train)
    return config, mesh, state, steps, batch


def tree_equal(a, b):
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


# The GANSteps method of each phase.
PHASE_STEPS = {
    "completion": "reconstruction_step",
    "discriminator": "discriminator_step",
    "joint": "joint_step",
}


def test_phase_schedule_switches_at_configured_steps():
    config = glcic_config.get_config()
    assert trainer.phase_for_step(0, config) == "completion"
    assert trainer.phase_for_step(89_999, config) == "completion"
    assert trainer.phase_for_step(90_000, config) == "discriminator"
    assert trainer.phase_for_step(99_999, config) == "discriminator"
    assert trainer.phase_for_step(100_000, config) == "joint"
    assert trainer.phase_for_step(499_999, config) == "joint"


def test_paper_defaults():
    config = glcic_config.get_config()
    assert config.loss.alpha == 0.0004
    assert config.loss.reconstruction == "mse"
    assert config.loss.gan == "bce"
    assert config.g_optimizer.name == "adadelta"
    assert config.d_optimizer.name == "adadelta"
    assert config.global_batch_size == 96
    assert (config.completion_steps, config.discriminator_steps, config.total_steps) == (
        90_000,
        10_000,
        500_000,
    )
    assert config.data.crop_size == 256
    assert tuple(config.data.resize_range) == (256, 384)
    assert config.mask.kind == "glcic" and config.mask.local_size == 128
    assert config.model.width_multiplier == 1.0
    assert config.data.name == "places365_hr"


def test_completion_step_updates_only_the_generator(setup):
    config, mesh, state, steps, batch = setup
    batch = parallel.make_global_batch(batch, mesh)
    new, metrics = jax.jit(steps.reconstruction_step)(state, batch)
    assert int(new.step) == 1
    assert set(metrics) == {"g_reconstruction", "g_grad_norm"}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert not tree_equal(new.g_params, state.g_params)
    assert not tree_equal(new.batch_stats["g"], state.batch_stats["g"])
    assert tree_equal(new.d_params, state.d_params)
    assert tree_equal(new.batch_stats["d"], state.batch_stats["d"])


def test_discriminator_step_freezes_the_generator(setup):
    config, mesh, state, steps, batch = setup
    batch = parallel.make_global_batch(batch, mesh)
    new, metrics = jax.jit(steps.discriminator_step)(state, batch)
    assert set(metrics) == {"d_loss", "d_grad_norm", "d_acc_real", "d_acc_fake"}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert tree_equal(new.g_params, state.g_params)
    assert tree_equal(new.batch_stats["g"], state.batch_stats["g"])
    assert tree_equal(new.g_opt_state, state.g_opt_state)
    assert not tree_equal(new.d_params, state.d_params)


def test_joint_step_updates_both(setup):
    config, mesh, state, steps, batch = setup
    batch = parallel.make_global_batch(batch, mesh)
    new, metrics = jax.jit(steps.joint_step)(state, batch)
    assert {"g_loss", "g_reconstruction", "g_adversarial", "d_loss"} <= set(metrics)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert not tree_equal(new.g_params, state.g_params)
    assert not tree_equal(new.d_params, state.d_params)
    expected = float(metrics["g_reconstruction"]) + config.loss.alpha * float(
        metrics["g_adversarial"]
    )
    np.testing.assert_allclose(float(metrics["g_loss"]), expected, rtol=1e-6)


def test_joint_step_gradient_matches_direct_differentiation(setup):
    """The single-forward VJP gives the gradient of differentiating end to end."""
    config, mesh, state, steps, batch = setup
    batch = parallel.make_global_batch(batch, mesh)
    sgd = common.create_optimizer(
        ml_collections.ConfigDict(dict(name="sgd", learning_rate=1.0, b1=0.0, b2=0.0, eps=0.0))
    )
    steps = trainer.Steps(config, steps.generator, steps.discriminator, sgd, sgd)
    state = state.replace(
        g_opt_state=sgd.init(state.g_params), d_opt_state=sgd.init(state.d_params)
    )
    after_d, _ = steps.discriminator_update(
        state, batch, steps.complete(state, batch, train=True)[0]
    )

    def direct(g_params):
        prediction, _ = steps.complete(state.replace(g_params=g_params), batch, train=True)
        completion = layers.composite(batch["image"], prediction, batch["mask"])
        logits, _ = steps.judge(
            after_d.d_params, after_d.batch_stats["d"], completion, batch["local_box"]
        )
        return steps.reconstruction(
            prediction, batch["image"], batch["mask"]
        ) + config.loss.alpha * losses.generator_loss(logits, config.loss.gan)

    expected = jax.jit(jax.grad(direct))(state.g_params)
    new, _ = jax.jit(steps.joint_step)(state, batch)
    got = jax.tree.map(lambda old, new: old - new, state.g_params, new.g_params)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        scale = float(jnp.max(jnp.abs(e)))
        np.testing.assert_allclose(g, e, atol=1e-4 * scale + 1e-8)


@pytest.mark.parametrize("phase", trainer.PHASES)
def test_one_device_and_eight_devices_agree(setup, phase):
    config, _, _, _, local_batch = setup
    results = []
    for devices in (jax.devices()[:1], jax.devices()[:8]):
        mesh = parallel.create_mesh(devices)
        state, steps = recipe_steps(trainer, config, mesh)
        fn = getattr(steps, PHASE_STEPS[phase])
        batch = parallel.make_global_batch(local_batch, mesh)
        assert batch["image"].sharding.num_devices == len(devices)
        results.append(jax.device_get(jax.jit(fn)(state, batch)))
    (one_state, one_metrics), (eight_state, eight_metrics) = results
    for key in one_metrics:
        np.testing.assert_allclose(one_metrics[key], eight_metrics[key], rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(one_state), jax.tree.leaves(eight_state)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def bfloat16_setup(setup):
    """(initial state, phase steps) of the tiny config with compute_dtype="bfloat16"."""
    config, mesh, _, _, _ = setup
    config = override(config.copy_and_resolve_references(), {"compute_dtype": "bfloat16"})
    return recipe_steps(trainer, config, mesh)


def float_leaves(tree):
    """The floating-point leaves of `tree` (not the step counter, not the RNG key)."""
    return [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]


def update_cosine(before, after_a, after_b):
    """Cosine between the parameter changes before -> after_a and before -> after_b."""
    def change(after):
        return np.concatenate(
            [np.ravel(a - b) for a, b in zip(float_leaves(after), float_leaves(before))]
        )

    delta_a, delta_b = change(after_a), change(after_b)
    return delta_a @ delta_b / (np.linalg.norm(delta_a) * np.linalg.norm(delta_b))


def test_bfloat16_models_keep_float32_parameters_and_optimizer_state(setup, bfloat16_setup):
    _, _, state, _, _ = setup
    bf16_state, bf16_steps = bfloat16_setup
    assert bf16_steps.generator.dtype == bf16_steps.discriminator.dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in float_leaves(bf16_state)} == {jnp.dtype(jnp.float32)}
    # The same parameters as the float32 recipe's: checkpoints move between the two.
    assert tree_equal(bf16_state.g_params, state.g_params)
    assert tree_equal(bf16_state.d_params, state.d_params)


@pytest.mark.parametrize("phase", trainer.PHASES)
def test_bfloat16_step_stays_finite_and_close_to_the_float32_step(setup, bfloat16_setup, phase):
    config, mesh, state, steps, local_batch = setup
    _, bf16_steps = bfloat16_setup
    batch = parallel.make_global_batch(local_batch, mesh)
    want, want_metrics = jax.jit(getattr(steps, PHASE_STEPS[phase]))(state, batch)
    got, got_metrics = jax.jit(getattr(bf16_steps, PHASE_STEPS[phase]))(state, batch)

    assert set(got_metrics) == set(want_metrics)
    for name, value in got_metrics.items():
        assert value.dtype == jnp.float32 and np.isfinite(float(value)), name  # float32 losses
        if name.endswith(("loss", "reconstruction", "adversarial")):
            np.testing.assert_allclose(value, want_metrics[name], rtol=3e-2, err_msg=name)
        elif name.endswith("grad_norm"):
            np.testing.assert_allclose(value, want_metrics[name], rtol=0.2, err_msg=name)
    leaves = float_leaves(got)
    assert {leaf.dtype for leaf in leaves} == {jnp.dtype(jnp.float32)}
    assert all(np.isfinite(leaf).all() for leaf in leaves)
    for got_stats, want_stats in zip(float_leaves(got.batch_stats), float_leaves(want.batch_stats)):
        np.testing.assert_allclose(got_stats, want_stats, rtol=1e-2, atol=2e-3)
    trained = {"completion": ["g"], "discriminator": ["d"], "joint": ["g", "d"]}[phase]
    for prefix in trained:
        params = f"{prefix}_params"
        before, f32, bf16 = (getattr(s, params) for s in (state, want, got))
        assert not tree_equal(bf16, f32)  # bfloat16 arithmetic really happened,
        assert update_cosine(before, f32, bf16) > 0.8, params  # yet the update points the same way.


def test_global_batch_not_divisible_by_devices_is_rejected(photo_dir, tmp_path):
    config = tiny_config(photo_dir, str(tmp_path / "tfds"), global_batch_size=6)
    with pytest.raises(ValueError, match="not divisible"):
        trainer.train_and_evaluate(config, str(tmp_path / "work"))


def test_unknown_dataset_is_rejected(photo_dir, tmp_path):
    config = tiny_config(photo_dir, str(tmp_path / "tfds"), **{"data.name": "imagenet_typo"})
    with pytest.raises(ValueError, match="imagenet_typo"):
        trainer.train_and_evaluate(config, str(tmp_path / "work"))


def test_empty_dataset_is_rejected(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tiny_config(str(empty), str(tmp_path / "tfds"))
    with pytest.raises(ValueError):
        trainer.train_and_evaluate(config, str(tmp_path / "work"))


def test_unwritable_workdir_is_rejected(photo_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    config = tiny_config(photo_dir, str(tmp_path / "tfds"))
    with pytest.raises(PermissionError, match="not writable"):
        trainer.train_and_evaluate(config, str(blocker / "work"))


def test_trains_evaluates_and_refuses_a_different_architecture(photo_dir, tmp_path):
    workdir = str(tmp_path / "work")
    config = tiny_config(photo_dir, str(tmp_path / "tfds"))
    state = trainer.train_and_evaluate(config, workdir)
    assert int(state.step) == config.total_steps
    results = json.load(open(os.path.join(workdir, "eval_metrics.json")))
    assert [r["step"] for r in results] == [3, 6]
    for key in ("psnr", "ssim", "l1", "l2", "hole_psnr", "hole_ssim", "hole_l1", "hole_l2"):
        assert np.isfinite(results[-1][key])
    ckpt_dir = os.path.join(workdir, "checkpoints")
    before = {
        p: os.path.getmtime(os.path.join(r, p)) for r, _, files in os.walk(ckpt_dir) for p in files
    }
    wider = tiny_config(
        photo_dir, str(tmp_path / "tfds"), **{"model.width_multiplier": 0.25, "total_steps": 9}
    )
    with pytest.raises(checkpointing.CheckpointMismatchError):
        trainer.train_and_evaluate(wider, workdir)
    after = {
        p: os.path.getmtime(os.path.join(r, p)) for r, _, files in os.walk(ckpt_dir) for p in files
    }
    assert before == after


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(photo_dir, tmp_path):
    workdir = str(tmp_path / "work")
    data_dir = str(tmp_path / "tfds")
    trainer.train_and_evaluate(tiny_config(photo_dir, data_dir, total_steps=3), workdir)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    assert checkpointing.Checkpointer(ckpt_dir).all_steps() == [3]
    exploding = tiny_config(
        photo_dir, data_dir, total_steps=9, **{"g_optimizer.learning_rate": 1e30}
    )
    # Step 5 (the first joint step) applies the exploding update; step 6 -- a checkpoint
    # step -- computes its losses from infinite parameters and must not be saved.
    with pytest.raises(FloatingPointError, match=r"step 6 in .*g_reconstruction"):
        trainer.train_and_evaluate(exploding, workdir)
    assert checkpointing.Checkpointer(ckpt_dir).all_steps() == [3]


# ---------------------------------------------------------------- subprocesses


def test_cli_runlocal_pipeline_runs_all_phases(photo_dir, tmp_path):
    config = tiny_config(photo_dir, str(tmp_path / "tfds"))
    proc = run_train(config, str(tmp_path / "work"))
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    scalars = logged_scalars(str(tmp_path / "work"))
    assert sorted(scalars) == list(range(1, 7))
    assert "g_reconstruction" in scalars[1] and "d_loss" not in scalars[1]
    assert "d_loss" in scalars[3] and "g_reconstruction" not in scalars[3]
    assert {"d_loss", "g_adversarial"} <= set(scalars[5])
    assert os.path.isdir(os.path.join(tmp_path, "work", "checkpoints", "6"))


def test_cli_config_typo_fails_clearly(photo_dir, tmp_path):
    config = tiny_config(photo_dir, str(tmp_path / "tfds"))
    proc = run_train(config, str(tmp_path / "work"), extra=["--config.loss.alpah=0.1"])
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "alpah" in output


def wait_for_step(proc, step):
    """Reads the run's output until it logs `step`; returns what it read."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if f"[{step}]" in line:
            return "".join(lines)
    raise AssertionError("run ended before step %d:\n%s" % (step, "".join(lines)))


def test_sigterm_then_resume_reproduces_an_uninterrupted_run(photo_dir, tmp_path):
    """2k steps straight == ~1k steps, SIGTERM, resume to 2k: same losses step for step."""
    data_dir = str(tmp_path / "tfds")
    config = tiny_config(
        photo_dir,
        data_dir,
        completion_steps=600,
        discriminator_steps=200,
        total_steps=2000,
        log_every_steps=1,
        eval_every_steps=1000,
        checkpoint_every_steps=700,
    )
    sources.build_dataset("image_folder", data_dir=data_dir, manual_dir=photo_dir)  # once.
    straight = run_train(config, str(tmp_path / "straight"))
    interrupted = run_train(config, str(tmp_path / "resumed"))
    wait_for_step(interrupted, 1000)
    interrupted.send_signal(signal.SIGTERM)
    output, _ = interrupted.communicate(timeout=300)
    assert interrupted.returncode == 0, output
    saved = checkpointing.Checkpointer(str(tmp_path / "resumed" / "checkpoints")).latest_step()
    assert 1000 <= saved < 2000
    resumed = run_train(config, str(tmp_path / "resumed"))
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    assert f"Resumed from step {saved}" in output
    output, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, output

    want = logged_scalars(str(tmp_path / "straight"))
    got = logged_scalars(str(tmp_path / "resumed"))
    assert sorted(want) == sorted(got) == list(range(1, 2001))
    for step in range(1, 2001):
        for tag, value in want[step].items():
            if tag.endswith(("loss", "reconstruction", "adversarial")):
                assert got[step][tag] == pytest.approx(value, rel=1e-6), (step, tag)
