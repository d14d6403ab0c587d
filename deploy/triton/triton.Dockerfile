# The Triton image of icd's compose stacks: NGC's python-backend image with torch (-pyt-python-py3) plus what icd's
# python-backend exports run on besides torch: OpenVINO and ONNX Runtime (`icd profile` often chooses one of them
# on a CPU) and cryptography (encrypted permutation files, docs/security.md). docker-compose builds it on the
# first `up` (tagged TRITON_IMAGE, default icd-tritonserver:24.08); TRITON_BASE_IMAGE picks another NGC release.
# Not built on the machine that tests icd: no Docker engine runs there (docs/serving.md, "Runtimes inside the
# container"); tests/serve/test_compose.py checks the file, its requirements and the compose files that build it.
ARG TRITON_BASE_IMAGE=nvcr.io/nvidia/tritonserver:24.08-pyt-python-py3
FROM ${TRITON_BASE_IMAGE}
COPY triton-requirements.txt /opt/icd/triton-requirements.txt
RUN python3 -m pip install --no-cache-dir -r /opt/icd/triton-requirements.txt \
 && python3 -c "import numpy, onnxruntime, openvino, cryptography; print('icd runtimes in the Triton image:', \
'numpy', numpy.__version__, 'onnxruntime', onnxruntime.__version__, 'openvino', openvino.__version__)"
