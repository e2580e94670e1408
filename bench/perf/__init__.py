"""`bench perf`: the fast paths of the inner loop timed side by side with naive references.

- ``reference``: the official TTAID test loop at its own cost, and naive MTL, MAXL and meta-test
  loops, slower by design and named so (the baselines, and the equivalence references of
  tests/test_adapt.py);
- ``measure``: interleaved timing, peak memory (CUDA allocator; CPU profiler / RSS);
- ``roofline``: FLOPs per variant and the machine's measured matmul and convolution peaks;
- ``cases``: MTL step, meta-test per size (+ bf16/fp16, channels-last, torch.compile), batched
  meta-test, MAXL step, evaluation throughput — each checked against its reference first;
- ``memmodel``: MTL memory versus K, batch and patch size, fitted and extrapolated;
- ``contention``: a training stage alone and beside a busy process, per OpenMP wait setting
  (``python -m bench.perf.contention`` or ``bench perf --only contention``);
- ``suite``: configuration, the run, JSON and Markdown reports.
"""
from bench.perf.harness import PerfConfig
from bench.perf.reference import naive_meta_test, naive_mtl_loss
from bench.perf.suite import failed_checks, make_config, run_perf, to_markdown, write_report

__all__ = ["PerfConfig", "failed_checks", "make_config", "naive_meta_test", "naive_mtl_loss", "run_perf",
           "to_markdown", "write_report"]
