"""CPU / GPU runtimes an exported model can run on: one interface per runtime, one registry.

``torchscript`` (``model.pt``, torch), ``onnx`` (``model.onnx``, ONNX Runtime) and ``openvino`` (``model.xml`` +
``model.bin``, OpenVINO, int8 through NNCF with icd's decisions). Each runtime exports an artefact from a run's
model (:class:`icd.runtimes.source.ModelSource`), loads it as an in-process :class:`icd.runtimes.base.Session`,
and names the Triton backend that serves its format. :mod:`icd.runtimes.verify` checks an export against the
in-process model, :mod:`icd.runtimes.profile` times every runtime × precision and :mod:`icd.runtimes.choice`
picks one. See docs/runtimes.md.
"""
