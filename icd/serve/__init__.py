"""Serving: the embedded ``tritonserver`` (:mod:`icd.serve.triton_local`), its python-backend runtime (checksums,
correlation cache, ICD metrics; :mod:`icd.serve.backend`) and a synthetic test model
(:mod:`icd.serve.synthetic_model`)."""
