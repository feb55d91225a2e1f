"""Speed and memory measurements behind `launch.benchmark`, one module per job.

Four benchmarks, each returning JSON-ready results that `tables` prints and
writes (`tables.build_report`, `tables.write_report`):

* `inference.benchmark_inference`: completion latency of a generator per
  image size, batch 1, in the GLCIC paper's timing-table format (size,
  pixels, seconds).
* `train.benchmark_train`: training images/second per device of each phase
  step of a recipe (the phases of its schedule: GLCIC completion,
  discriminator, joint; PGGAN joint), with a fixed synthetic batch (data
  excluded) and with the real input pipeline (data included), so a
  data-bound run is visible. The recipe's `build` is passed in: this
  package never imports the trainers.
* `data.benchmark_data`: input-pipeline throughput (images/second per process).
* `nps.benchmark_nps`: seconds per image of multi-scale neural patch
  synthesis (`inpaint_jax/nps.py`), per pyramid level and in all, with the
  time the first image spends compiling (`measure.compile_time`).

`measure` holds the primitives (timing, memory, compile time, environment),
`configs` the benchmark's config overrides, `reference` the protocol of a
reference implementation in another framework and `torch_glcic` the
PyTorch one (imported only when asked for: torch is a test/bench extra).

How things are measured:
  * A jitted function is lowered and compiled explicitly, and that time is
    reported as `compile_seconds`; the timed calls run the compiled
    executable and wait for its result (`jax.block_until_ready`).
  * The first untimed call of every function is also its memory probe; the
    remaining warm-up calls follow, then the timed runs. The median is the
    headline figure (robust to other processes on a shared machine); mean,
    min and every run are kept in the JSON.
  * A reference implementation in another framework
    (`reference.ReferenceFramework`, e.g. `torch_glcic`) is timed round-robin with the
    JAX function -- one call of each in turn -- so a load spike slows both,
    and its output is compared with JAX's, so the two compute the same thing.
  * Memory: the process's peak resident set size during the probe call (on
    Linux the peak is reset first, via /proc/self/clear_refs; elsewhere it
    is the lifetime peak), the accelerator's `peak_bytes_in_use` where the
    device reports it, and XLA's own buffer sizes for the compiled program.
"""
