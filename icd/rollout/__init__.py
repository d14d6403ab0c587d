"""Safe rollouts: the nginx traffic router, A/B statistics, the Flagger-style canary, blue-green.

One concept per module:

* router: ``router_config`` (RouterSpec → nginx.conf), ``router_nginx`` (process, graceful reload), ``router_log``
  (its JSON access log), ``router_exporter`` (Prometheus series from that log), ``router_ops`` (CLI helpers),
  ``weights`` (split arithmetic);
* traffic: ``traffic`` (client-side closed-loop requests through the router), ``payloads`` (KServe v2 bodies);
* A/B: ``stats`` (tests and verdicts), ``ab`` (run, compare, report);
* canary: ``canary_spec``, ``phase``, ``providers``, ``analysis``, ``scheduler``, ``status_store``,
  ``decision_log``, ``controller``, ``controller_metrics``;
* blue-green: ``validation`` (validate a deployment), ``bluegreen`` (switch with watch and switch-back).

See docs/rollout.md.
"""
