"""TensorRT backend: runs a serialized engine (.plan) with cuda-python for device memory (no torch).

Registers itself as ``tensorrt`` on import; tensorrt and cuda-python are imported when an engine is opened."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backends import BackendUnavailable, _check_io, register_backend
from .spec import ModelFileError, StreamModelSpec


def _import_cuda():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(
            "TensorRT is not installed: pip install 'ssamba-stream[gpu]' (needs an NVIDIA GPU)"
        ) from None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise BackendUnavailable(
                "cuda-python is not installed: pip install 'ssamba-stream[gpu]'"
            ) from None
    return trt, cudart


class TensorRTBackend:
    """One engine, one execution context, one CUDA stream; device buffers reused while shapes stay."""

    def __init__(self, plan_path: Path, spec: StreamModelSpec) -> None:
        trt, self.cudart = _import_cuda()
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(plan_path).read_bytes())
        if engine is None:
            raise ModelFileError(
                f"{plan_path} is not a TensorRT engine for this GPU and TensorRT version: rebuild it with "
                "'ssamba-export trt' on this device"
            )
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        _check_io(plan_path, spec, self.inputs, self.outputs)
        self.stream = self._call(self.cudart.cudaStreamCreate())
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _call(self, result):
        error, *values = result if isinstance(result, tuple) else (result,)
        if int(error) != 0:
            raise BackendUnavailable(f"CUDA call failed with {error}: is an NVIDIA GPU available?")
        return values[0] if values else None

    def _device(self, name: str, nbytes: int) -> int:
        pointer, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                self._call(self.cudart.cudaFree(pointer))
            pointer = self._call(self.cudart.cudaMalloc(nbytes))
            self.buffers[name] = (pointer, nbytes)
        return pointer

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, context = self.cudart, self.context
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.inputs:
            host = np.ascontiguousarray(
                inputs[name], dtype=self.trt.nptype(self.engine.get_tensor_dtype(name))
            )
            context.set_input_shape(name, host.shape)
            pointer = self._device(name, host.nbytes)
            self._call(cudart.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, h2d, self.stream))
            context.set_tensor_address(name, pointer)
        results = {}
        for name in self.outputs:
            shape = tuple(context.get_tensor_shape(name))
            results[name] = np.empty(shape, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            context.set_tensor_address(name, self._device(name, results[name].nbytes))
        if not context.execute_async_v3(self.stream):
            raise BackendUnavailable("TensorRT failed to execute the engine")
        for name, host in results.items():
            self._call(
                cudart.cudaMemcpyAsync(host.ctypes.data, self.buffers[name][0], host.nbytes, d2h, self.stream)
            )
        self._call(cudart.cudaStreamSynchronize(self.stream))
        return {name: value.astype(np.float32, copy=False) for name, value in results.items()}

    def __del__(self) -> None:
        for pointer, _ in getattr(self, "buffers", {}).values():
            self.cudart.cudaFree(pointer)


register_backend("tensorrt", lambda path, spec, threads: TensorRTBackend(path, spec))
