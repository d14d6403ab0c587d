"""The embedded mirror of the compose stacks (``deploy/triton/docker-compose*.yml``) on 127.0.0.1.

``icd stack up`` reads a compose file the way ``docker-compose`` does (``.env`` next to it, ``${VAR:-default}``
interpolation) and starts each service as a local process on the host ports the file publishes: Triton (the
bundled ``tritonserver``), Prometheus, Alertmanager, the icd console dashboard in Grafana's place, and the nginx
router (``x-icd-router``). See docs/guide.md.
"""
