"""Safe rollouts: the nginx traffic router, A/B statistics, one rollout loop for every strategy, shadow traffic.

One concept per module:

* router: ``nginx_process`` (the one nginx process manager: check, start, graceful reload, stop), ``router_config``
  (RouterSpec → nginx.conf: weights, pinning, match rules, mirror), ``router_nginx`` (the router, ``Routes``),
  ``router_log`` (its JSON access log), ``router_exporter`` (Prometheus series from that log), ``router_ops``
  (CLI helpers, side processes, ``ManagedRouter``), ``weights`` (split arithmetic), ``preflight`` (models READY and
  routed before anything starts);
* traffic: :mod:`icd.load.routed` (per-request recorded traffic through the router), ``payloads`` (KServe v2 bodies);
* A/B experiment: ``blocked`` (within-block tests, block bootstrap), ``stats`` (verdicts, proportion tests),
  ``agreement`` (output agreement that fits the task), ``ab`` (run, compare, report);
* the rollout loop: ``canary_spec`` (the spec, Flagger's vocabulary), ``canary_build`` (flags → spec),
  ``strategies`` (what the router is told), ``scheduler`` (one tick), ``analysis`` + ``window`` + ``providers``
  (one analysis), ``webhooks``, ``phase``, ``status_store``, ``decision_log``, ``controller``,
  ``controller_metrics``;
* blue-green: ``validation`` (validate a deployment; the ``validate`` webhook), ``bluegreen`` (the switch as a
  strategy of the loop);
* shadow traffic: ``shadow`` (the comparator behind nginx ``mirror``; ``icd_shadow_*`` metrics).

See docs/rollout.md.
"""
