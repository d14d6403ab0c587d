"""Kubernetes manifests of icd's scale-out files: offline validation against Kubernetes and CRD schemas, rendering.

``validate.py`` checks manifests (core kinds with kubernetes-validate, CRD kinds such as KServe's
``InferenceService`` with their vendored schemas in ``deploy/schemas/``) and Helm values files (with a schema of
what the chart's templates read); ``crd_schema.py`` turns a CRD into such a schema; ``render.py`` writes a
validated copy with ``--set`` overrides, all or nothing.
"""
