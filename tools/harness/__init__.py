"""The trusted measurement harness behind `check` and `bench`: nothing the submission's process
says is believed.

Principles, and where each lives:
- The submission's process is hostile (`side`): forked before any secret exists, every other
  descriptor closed, confined by a seccomp filter so it cannot signal, renice, re-affine,
  ptrace or read another process (`confine`), pinned to the CPUs and thread count the tool
  chose, and frozen, every process it forked included, whenever it is not being asked
  something (`proctree`). What comes back is plain tensors or nothing (`wire`).
- The timed call is the verified call (`cpu_sampling`, `slots`): a fresh secret input set per
  call placed in shared memory outside the clock, one call per window, the clock the tool's own
  from thaw to confirmed freeze, outputs read from the frozen submission's memory and verified
  at random after the call.
- Correctness a trivial answer cannot pass (`compare`, `inputs`): tolerances scaled to the
  reference's magnitude, a norm-relative test, a second input distribution, degenerate outputs
  named.
- Noise and implausibility are results (`host_load`, `cpu_sampling.median_ci`, the bench tool):
  paired rounds, a confidence interval, contention and steal, a bytes floor and a ceiling.
- Static flags are a second line of defence (`flags`); problem formats sit behind one
  interface (`problems`); `session` starts and stops a measurement's sides; what check and
  bench decide alike about a request (options, device, flag policy) is `request_policy`.

`tools.check` and `tools.bench` are thin tools over this package; nothing here imports the
sandbox.
"""
