"""The FineTuneJob trainer: planner, LLaMA Factory launcher, live monitoring, OOM recovery and report.

Modules (none imports torch at module top level, so ``import thinktune.train.planner`` stays cheap):

- ``planner``   pure ``plan(spec, hw, model_info=..., dataset_size=..., world=...) -> Plan``
- ``launcher``  runs ``python -m thinktune.train.worker resolved.json`` (under torchrun for several processes)
- ``worker``    the subprocess entry: ``llamafactory.train.tuner.run_exp(args, callbacks=[...])``
- ``oom``       CUDA OOM recovery (halve micro-batch, double accumulation, gradient checkpointing on, resume)
- ``callbacks`` the monitoring TrainerCallback (glue: metrics.jsonl, Prometheus, console events), built from
  ``scoring`` (teacher-forced Chinese char / term accuracy), ``anomalies`` (loss spike, NaN, divergence,
  plateau, memory growth), ``exporter`` (the contract's Prometheus gauges) and ``console`` (event protocol
  and the launcher's view)
- ``failures``  GPU-failure vs application-error classification (exit codes and messages: thinktune.contract)
- ``report``    report.json + report.md + PNG plots
- ``job``       ``train_job(resolved_job, progress=...) -> dict`` (a ``thinktune.resolve.ResolvedJob``)
"""
