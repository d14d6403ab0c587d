"""Export a run to a Triton model repository (config.pbtxt, TorchScript, python backend, checksums).

Entry point: :func:`icd.export.repository.export_model` with :class:`icd.export.options.ExportOptions`.
"""
