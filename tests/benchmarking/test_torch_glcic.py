"""Tests for inpaint_jax.benchmarking.torch_glcic: GLCIC's completion network in PyTorch."""

import jax
import numpy as np
import pytest

from inpaint_jax import parallel
from inpaint_jax.benchmarking import inference, train
from inpaint_jax.models import glcic
from inpaint_jax.trainers import glcic as glcic_trainer
from inpaint_jax.trainers import phases
from tests.benchmarking.conftest import WIDTH, tiny_glcic

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates

pytest.importorskip("torch")
from inpaint_jax.benchmarking import torch_glcic  # noqa: E402  (needs torch)


def flax_kernels(network: torch_glcic.CompletionNetwork) -> dict[str, np.ndarray]:
    """The convolution kernels of the Torch `network` in Flax layout, by Flax layer name.

    The inverse of the layout change in `torch_glcic.load_flax_variables`.
    """
    kernels = {}
    for index, (spec, block) in enumerate(zip(glcic.COMPLETION_LAYERS, network.blocks), start=1):
        weight = block[0].weight.detach().numpy()
        if spec.kind == "deconv":
            kernels[f"layer{index:02d}"] = weight.transpose(2, 3, 0, 1)[::-1, ::-1]
        else:
            kernels[f"layer{index:02d}"] = weight.transpose(2, 3, 1, 0)
    return kernels


def test_flax_kernels_inverts_the_loaded_layout(glcic_generator):
    network = torch_glcic.load_flax_variables(torch_glcic.CompletionNetwork(WIDTH),
                                              jax.device_get(glcic_generator.variables))
    kernels = flax_kernels(network)
    assert sorted(kernels) == [f"layer{i:02d}" for i in range(1, 18)]
    for name, kernel in kernels.items():
        np.testing.assert_array_equal(
            kernel, glcic_generator.variables["params"][name]["conv"]["kernel"])


def test_torch_reference_matches_the_flax_completion_network(glcic_generator, reference):
    image, mask = inference.inference_inputs(32, 32, seed=3)
    ours = np.asarray(
        glcic_generator.module.apply(glcic_generator.variables, image, mask, train=False)
    )
    forward = reference.completion_forward(
        jax.device_get(glcic_generator.variables),
        width_multiplier=WIDTH,
        fill_value=tuple(glcic_generator.model_config.fill_value),
        image=image,
        mask=mask,
    )
    theirs = forward()
    assert theirs.shape == ours.shape == (1, 32, 32, 3)
    assert ours.std() > 0.02  # calibrated statistics: not the constant 0.5 of vanished activations
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
    assert reference.families == ("glcic",) and reference.phase == phases.COMPLETION
    assert reference.num_threads >= 1


def test_torch_training_step_matches_the_jax_completion_phase(reference):
    config = tiny_glcic(size=16)
    config.global_batch_size = 2
    mesh = parallel.create_mesh(jax.devices()[:1])
    training = glcic_trainer.build(config, mesh)
    state = training.state
    variables = jax.device_get({"params": state.g_params, "batch_stats": state.batch_stats["g"]})
    batch = train.synthetic_batch(config, mesh)
    new_state, metrics = jax.jit(training.steps[phases.COMPLETION])(
        state, parallel.make_global_batch(batch, mesh)
    )

    train_step, network = reference.completion_train_step(
        variables,
        width_multiplier=WIDTH,
        fill_value=tuple(config.model.fill_value),
        optimizer_config=config.g_optimizer.to_dict(),
        image=batch["image"],
        mask=batch["mask"],
    )
    loss = train_step()
    assert loss == pytest.approx(float(metrics["g_reconstruction"]), rel=1e-5)
    for name, kernel in flax_kernels(network).items():
        before = variables["params"][name]["conv"]["kernel"]
        after = np.asarray(new_state.g_params[name]["conv"]["kernel"])
        assert not np.allclose(after, before)  # the step moved every layer,
        np.testing.assert_allclose(kernel, after, atol=2e-5, err_msg=name)  # the same way


def test_torch_reference_rejects_variables_of_another_width(glcic_generator):
    network = torch_glcic.CompletionNetwork(width_multiplier=0.25)
    with pytest.raises(
        torch_glcic.ReferenceMismatchError, match="layer01/conv/kernel.*width_multiplier"
    ):
        torch_glcic.load_flax_variables(network, jax.device_get(glcic_generator.variables))
    with pytest.raises(torch_glcic.ReferenceMismatchError, match="no layer01; is this GLCIC"):
        torch_glcic.load_flax_variables(network, {"params": {}, "batch_stats": {}})


def test_torch_reference_mirrors_adadelta_only():
    network = torch_glcic.CompletionNetwork(width_multiplier=WIDTH)
    with pytest.raises(ValueError, match="Adadelta only, got optimizer 'adam'"):
        torch_glcic.adadelta(
            network, {"name": "adam", "learning_rate": 1e-3, "b1": 0.9, "eps": 1e-8}
        )
    optimizer = torch_glcic.adadelta(network, tiny_glcic().g_optimizer.to_dict())
    assert optimizer.defaults["rho"] == 0.9 and optimizer.defaults["eps"] == 1e-6


def test_masked_mse_is_the_jax_loss():
    from inpaint_jax import losses  # noqa: PLC0415

    rng = np.random.default_rng(0)
    prediction, target = (rng.uniform(size=(2, 8, 8, 3)).astype(np.float32) for _ in range(2))
    mask = (rng.uniform(size=(2, 8, 8, 1)) > 0.5).astype(np.float32)
    theirs = torch_glcic.masked_mse(*(torch_glcic.to_nchw(x) for x in (prediction, target, mask)))
    np.testing.assert_allclose(theirs.item(), float(losses.masked_mse(prediction, target, mask)),
                               rtol=1e-6)
