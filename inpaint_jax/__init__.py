"""inpaint_jax: JAX/Flax reimplementations of the classic deep image-inpainting systems."""
