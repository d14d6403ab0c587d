"""Wire clients used inside a generator worker: a lean keep-alive HTTP/1.1 client and Triton's gRPC aio client.

Each ``send`` returns ``None`` on a successful answer and raises :class:`RequestError` with a short error kind
(``http_<status>``, ``grpc_<status>``, ``connection``, ``timeout``) otherwise. The HTTP client writes pre-built
request bytes and reads only the status line, headers and body length: it is the cheapest way to keep a
Python generator far from being the bottleneck.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class RequestError(Exception):
    """A failed request: ``kind`` groups errors in the report, ``detail`` is a sample message."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


class Client(Protocol):
    async def send(self, payload: Any) -> None: ...

    async def close(self) -> None: ...


_CL = b"\r\ncontent-length:"
_TE_CHUNKED = b"transfer-encoding: chunked"
_CONN_CLOSE = b"connection: close"


class HttpConnection:
    """One persistent HTTP/1.1 connection (opened on first use, reopened after an error)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, payload: bytes) -> None:
        try:
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self._writer.write(payload)
            status, body = await self._read_response()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            await self.close()
            raise RequestError("connection", f"{type(exc).__name__}: {exc}") from None
        if status != 200:
            raise RequestError(f"http_{status}", body[:200].decode("utf-8", "replace"))

    async def _read_response(self) -> tuple[int, bytes]:
        assert self._reader is not None
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        idx = lower.find(_CL)
        body = b""
        if idx >= 0:
            end = lower.index(b"\r\n", idx + 2)
            length = int(lower[idx + len(_CL):end])
            body = await self._reader.readexactly(length)
        elif _TE_CHUNKED in lower:
            body = await self._read_chunked()
        if _CONN_CLOSE in lower:
            await self.close()
        return status, body if status != 200 else b""

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await self._reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(data[:-2])

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()


class GrpcClient:
    """Triton's ``tritonclient.grpc.aio`` client for one model; payloads are ``(inputs, outputs)`` tuples."""

    def __init__(self, address: str, model: str, timeout_s: float) -> None:
        import tritonclient.grpc.aio as grpcaio

        self.model = model
        self.timeout_s = timeout_s
        self._client = grpcaio.InferenceServerClient(address)

    async def send(self, payload: Any) -> None:
        from tritonclient.utils import InferenceServerException

        try:
            await self._client.infer(self.model, payload, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            status = (exc.status() or "unknown").replace("StatusCode.", "").lower()
            if "deadline" in status:
                raise RequestError("timeout", exc.message() or "") from None
            raise RequestError(f"grpc_{status}", (exc.message() or "")[:200]) from None

    async def close(self) -> None:
        await self._client.close()


def grpc_payload(arrays: dict) -> list:
    """Triton ``InferInput`` objects for one request (reusable across sends)."""
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, arr in arrays.items():
        item = grpcclient.InferInput(name, list(arr.shape), "INT64" if arr.dtype.itemsize == 8 else "INT32")
        item.set_data_from_numpy(arr)
        inputs.append(item)
    return inputs
