"""An exported model: ONNX file + ``dmdet.*`` metadata, providers, one reusable ONNX Runtime session.

On the CPU the network runs through OpenVINO when it is installed (``pip install "dmdet[openvino]"``): its CPU
plugin ran the shipped network 2.3x faster than ONNX Runtime on the same ONNX file, with the same map to 1e-6
(BENCHMARKS.md). ONNX Runtime still reads the file and its metadata, runs the CUDA provider and is the fallback.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, where
from .metadata import ModelInfo, from_props

DEVICES = ("auto", "cpu", "cuda")
#: "auto": OpenVINO on the CPU when it is installed and the model is float32, else ONNX Runtime.
RUNTIMES = ("auto", "onnxruntime", "openvino")
#: The network's arithmetic on the CPU through OpenVINO. "auto": bf16 where the CPU computes it natively
#: (AVX-512 BF16 or AMX), fp32 otherwise; ONNX Runtime always runs the model's own precision.
CPU_PRECISIONS = ("auto", "fp32", "bf16")
#: The ONNX Runtime ``RunOptions`` of the network calls in progress in this process (see :func:`cancel_runs`).
_ACTIVE: set = set()
_ACTIVE_CHANGED = threading.Condition(threading.RLock())  # reentrant: cancel_runs may run in a signal handler
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(str(resources.files("dmdet_infer") / "models" / "default.onnx"))


def cuda_options(tf32: bool = True) -> dict[str, str]:
    """CUDA provider options: fixed tile shapes pay the exhaustive cuDNN search once (method.md §5.2);
    ``tf32``: let fp32 convolutions use TF32 tensor cores (onnxruntime's default; 10-bit mantissa products)."""
    return {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "1", "use_tf32": str(int(tf32))}


def _providers(device: str, tf32: bool = True) -> list:
    import onnxruntime as ort

    if device not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    available = ort.get_available_providers()
    if device == "cpu" or (device == "auto" and CUDA not in available):
        return [CPU]
    if CUDA not in available:
        raise InputError(
            "CUDA requested but this onnxruntime has no CUDA provider; install it with "
            "`pip uninstall -y onnxruntime && pip install onnxruntime-gpu`, or use device='cpu'"
        )
    if device == "cuda":
        from .cuda import preload

        preload(use_torch=False)  # CUDA/cuDNN from the nvidia-* pip packages, where they are (never raises)
    return [(CUDA, cuda_options(tf32)), CPU]


def openvino_installed() -> bool:
    """Whether the ``openvino`` package can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


def openvino_version() -> str | None:
    """OpenVINO's release (e.g. "2026.4.1"), or None when it is not installed or cannot be imported."""
    if not openvino_installed():
        return None
    try:
        import openvino
    except Exception:  # a broken install: Model(runtime="auto") falls back to ONNX Runtime
        return None
    return str(openvino.__version__).split("-")[0]


@functools.lru_cache(maxsize=1)
def openvino_bf16() -> bool:
    """Whether OpenVINO computes bf16 natively on this CPU (AVX-512 BF16 or AMX); False when it is not importable."""
    if openvino_version() is None:
        return False
    import openvino as ov

    try:
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # OpenVINO raises its own exception types
        return False


def auto_precision() -> str:
    """What ``precision="auto"`` runs through OpenVINO on this CPU: "bf16" where it is native, else "fp32"."""
    return "bf16" if openvino_bf16() else "fp32"


class _Cancel:
    """What :func:`cancel_runs` sets on an OpenVINO call in progress (ONNX Runtime's ``RunOptions`` has the same
    ``terminate`` attribute)."""

    terminate = False


@dataclass
class _Compiled:
    """One shape's compiled model in :class:`OpenVINONetwork`: its calls in flight, and whether it holds working
    memory (it has run since its memory was last released)."""

    model: Any
    calls: int = 0
    holds_memory: bool = False


class OpenVINONetwork:
    """The network compiled by OpenVINO for the CPU, once for each block shape it is given, with an infer request
    per call.

    A model compiled for one static shape plans its working memory ahead: with it, the whole ``dmdet-infer`` on a
    10x512x512 stack peaked at 482 MiB instead of 545 MiB with the dynamic shapes that the file declares, in the
    same time and with the same map (BENCHMARKS.md). A compiled shape keeps its working memory between calls; a call
    of another shape first releases what the idle ones hold, so that a stack's decoy crop or a large volume's edge
    tiles never hold memory beside the tile being run. Compiling takes about a quarter of a second and each compiled
    shape holds about 16 MiB, so the last :attr:`KEEP` shapes are kept. The file is compiled once with its dynamic
    shapes when loaded, to report a model that OpenVINO cannot run at once."""

    #: Compiled shapes kept (the least recently used idle one is dropped first).
    KEEP = 4

    def __init__(self, path: Path, threads: int | None, precision: str = "fp32"):
        import openvino as ov

        # Always said: OpenVINO's own default is bf16 on CPUs that have it (AVX-512 BF16, AMX).
        #: the arithmetic it runs: "fp32" or "bf16"
        self.precision = precision
        hint = {"fp32": "f32", "bf16": "bf16"}[precision]
        self.config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.core = ov.Core()
        self.network = self.core.read_model(str(path))  # read once; each shape compiles a reshaped clone
        self.core.compile_model(self.network, "CPU", self.config)  # raises on what it cannot run
        #: shape -> its compiled model, least recently used first
        self.compiled: dict[tuple[int, ...], _Compiled] = {}
        self.lock = threading.Lock()

    def _acquire(self, shape: tuple[int, ...]) -> _Compiled:
        """The entry of ``shape`` (compiled now if it is not kept), counted as in use; the idle entries of other
        shapes release their working memory, and the oldest idle ones beyond :attr:`KEEP` are dropped."""
        with self.lock:
            entry = self.compiled.pop(shape, None)
            if entry is None:
                network = self.network.clone()
                network.reshape({0: list(shape)})
                entry = _Compiled(self.core.compile_model(network, "CPU", self.config))
            for other in self.compiled.values():
                if other.calls == 0 and other.holds_memory and hasattr(other.model, "release_memory"):  # >= 2024.3
                    try:
                        other.model.release_memory()
                        other.holds_memory = False
                    except RuntimeError:  # busy: a cancelled call may run on for a while; next time
                        pass
            idle = [key for key, other in self.compiled.items() if other.calls == 0]
            for key in idle[:max(0, len(self.compiled) + 1 - self.KEEP)]:
                del self.compiled[key]
            self.compiled[shape] = entry
            entry.calls += 1
            entry.holds_memory = True
            return entry

    def _release(self, entry: _Compiled) -> None:
        with self.lock:
            entry.calls -= 1

    def forward(self, x: np.ndarray, cancel: _Cancel | None) -> np.ndarray:
        entry = self._acquire(tuple(x.shape))
        try:
            request = entry.model.create_infer_request()
            request.start_async({0: x}, share_inputs=True)
            while not request.wait_for(50):  # milliseconds: a cancelled call stops within this
                if cancel is not None and cancel.terminate:
                    request.cancel()
                    raise RuntimeError("the network call was cancelled")
            return np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the request is dropped
        finally:
            self._release(entry)


class Model:
    """A dmdet ONNX model and its session. ``run`` is thread-safe (ONNX Runtime sessions are; OpenVINO gets an
    infer request per call).

    ``runtime``: "auto" runs the network through OpenVINO on the CPU when it is installed and the model is
    float32, else through ONNX Runtime; "onnxruntime" or "openvino" ask for one (OpenVINO: CPU only).
    ``self.runtime`` says which one runs it.

    ``precision``: the arithmetic of OpenVINO on the CPU: "auto" is bf16 where the CPU computes it natively
    (AVX-512 BF16 or AMX; about 1.6x faster, density maps within 0.006 of fp32: BENCHMARKS.md) and fp32
    otherwise; "fp32" or "bf16" ask for one. ``self.precision`` says what runs: "fp32" or "bf16" through OpenVINO,
    the model's own precision through ONNX Runtime.
    """

    def __init__(self, path: str | os.PathLike | None = None, device: str = "auto", threads: int | None = None,
                 tf32: bool = True, runtime: str = "auto", precision: str = "auto"):
        import onnxruntime as ort

        if runtime not in RUNTIMES:
            raise InputError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if precision not in CPU_PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(CPU_PRECISIONS)}, got {precision!r}")
        if runtime == "openvino" and device == "cuda":
            raise InputError("runtime openvino runs on the CPU; use device='cpu' (or 'auto'), or "
                             "runtime='onnxruntime' for CUDA")
        self.path = Path(path) if path is not None else default_model_path()
        if not self.path.is_file():
            if path is None:
                raise InputError(where(self.path, "the default model is missing from this installation; "
                                       "reinstall dmdet or give model=PATH"))
            raise InputError(where(self.path, "model file not found"))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # No CPU memory arena: tiles of a few shapes (edges) made the arena grow to 2x one tile's need; plain
        # allocations measured half the peak memory at the same speed (dmdet_infer.memory).
        options.enable_cpu_mem_arena = False
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = _providers(device, tf32)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises several private exception types
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(where(self.path, f"not a valid ONNX model ({reason[:160]})")) from None
        self.device = device
        self.providers = self.session.get_providers()
        if device == "cuda" and self.providers[0] != CUDA:
            raise InputError(
                "CUDA requested but not active: onnxruntime fell back to the CPU (CUDA/cuDNN libraries missing or "
                "incompatible); use device='cpu' or fix the CUDA installation"
            )
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1 or len(inputs[0].shape) != 5 or len(outputs[0].shape) != 5:
            shapes = [i.shape for i in inputs]
            raise InputError(where(self.path, f"model input must be one 5D tensor (N,1,Z,Y,X), got {shapes}"))
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.info: ModelInfo = from_props(props)
        except ValueError as exc:
            raise InputError(where(self.path, f"not a dmdet model: {exc}")) from None
        #: On CUDA, run through IO binding (one host->device copy of the input, the output bound on the device
        #: and copied back once); None until its first use, False after it failed once (then plain ``run``).
        self.io_binding: bool | None = None if self.on_cuda else False
        self.io_binding_error: str | None = None
        self.bind_device = "cuda"  # where IO binding puts the input and output (tests bind on "cpu")
        self.openvino: OpenVINONetwork | None = self._openvino(runtime, threads, precision)
        #: The runtime that runs the network: "openvino" or "onnxruntime".
        self.runtime = "openvino" if self.openvino is not None else "onnxruntime"
        #: The network's arithmetic: "fp32" or "bf16" through OpenVINO, the model's own through ONNX Runtime.
        self.precision = self.openvino.precision if self.openvino is not None else self.info.precision
        if precision == "bf16" and self.precision != "bf16":
            raise InputError("precision bf16 runs through OpenVINO on the CPU (runtime auto or openvino, "
                             'pip install "dmdet[openvino]"); use precision fp32 or auto')

    def _openvino(self, runtime: str, threads: int | None, precision: str = "auto") -> OpenVINONetwork | None:
        """The network compiled by OpenVINO when ``runtime`` asks for it (or allows it, on the CPU), else None."""
        if runtime == "onnxruntime" or (runtime == "auto" and (self.on_cuda or not openvino_installed()
                                                               or self.info.precision != "fp32")):
            return None
        if runtime == "openvino" and not openvino_installed():
            raise InputError('runtime openvino needs the openvino package: pip install "dmdet[openvino]"')
        if precision == "bf16" and not openvino_bf16():
            raise InputError("precision bf16 needs a CPU that computes it natively (AVX-512 BF16 or AMX), and this "
                             "one does not; use precision fp32 or auto")
        try:
            return OpenVINONetwork(self.path, threads, auto_precision() if precision == "auto" else precision)
        except Exception as exc:  # OpenVINO raises its own exception types
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            if runtime == "openvino":
                raise InputError(where(self.path, f"OpenVINO cannot run this model ({reason})")) from None
            warnings.warn(f"dmdet: OpenVINO cannot run {self.path.name} ({reason}); using ONNX Runtime",
                          RuntimeWarning, stacklevel=3)
            return None

    @property
    def on_cuda(self) -> bool:
        """Whether the session really runs on the CUDA provider."""
        return self.providers[0] == CUDA

    def run(self, block: np.ndarray) -> np.ndarray:
        """Density map of a normalised (Z,Y,X) float32 block whose shape is a multiple of the stride.

        Called from the main thread, the network runs in a helper thread while the main thread waits in short
        steps, so Ctrl-C (KeyboardInterrupt) arrives at once instead of when a call of many seconds ends; the call
        is then aborted (ONNX Runtime's ``RunOptions.terminate``). :func:`cancel_runs` aborts every call."""
        import onnxruntime as ort

        x = np.ascontiguousarray(block, dtype=np.float32)[None, None]
        options = _Cancel() if self.openvino is not None else ort.RunOptions()
        with _ACTIVE_CHANGED:
            _ACTIVE.add(options)
        try:
            if threading.current_thread() is threading.main_thread():
                out = _in_helper_thread(lambda: self._forward(x, options), options)
            else:
                out = _release(options, lambda: self._forward(x, options))
        except Exception as exc:  # onnxruntime's own exception types
            if "bad_alloc" in str(exc) or "Failed to allocate memory" in str(exc):
                raise InputError(where(self.path, f"not enough memory to run the network on a block of "
                                                  f"{'x'.join(map(str, block.shape))} voxels; pass a smaller tile= "
                                                  "or tile_memory=")) from None
            raise
        if out.shape != block.shape or out.dtype.kind != "f":  # a wrong network must not be read as spots
            raise InputError(where(self.path, f"the network returned {out.dtype} {out.shape} for an input of "
                                              f"{tuple(block.shape)}; a dmdet model returns a float map of the "
                                              "input's shape"))
        return out

    def _forward(self, x: np.ndarray, options=None) -> np.ndarray:
        if self.openvino is not None:
            return self.openvino.forward(x, options)[0, 0]
        if self.io_binding:
            return self._run_bound(x, options)[0, 0]
        if self.io_binding is None:  # first use on CUDA: fall back to session.run for good if binding fails
            try:
                out = self._run_bound(x, options)
            except Exception as exc:  # onnxruntime raises several private exception types
                if options is not None and options.terminate:  # aborted (Ctrl-C), not a binding failure
                    raise
                self.io_binding = False
                self.io_binding_error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                warnings.warn(f"dmdet: IO binding failed ({self.io_binding_error}); using session.run",
                              RuntimeWarning, stacklevel=2)
            else:
                self.io_binding = True
                return out[0, 0]
        (out,) = self.session.run([self.output_name], {self.input_name: x}, options)[:1]
        return out[0, 0]

    def _run_bound(self, x: np.ndarray, options=None) -> np.ndarray:
        """One forward through IO binding: the input copied to CUDA memory once, the output allocated there
        and copied to the host once. A binding per call, so concurrent calls (threads) do not share one."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        value = ort.OrtValue.ortvalue_from_numpy(x, self.bind_device, 0)  # kept alive until the run is done
        binding.bind_ortvalue_input(self.input_name, value)
        binding.bind_output(self.output_name, self.bind_device, 0)
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding, options)
        binding.synchronize_outputs()
        out = binding.copy_outputs_to_cpu()[0]
        del value
        return np.asarray(out, dtype=np.float32)


def cancel_runs(timeout: float = 1.0) -> bool:
    """Abort every network call in progress in this process (ONNX Runtime stops at its next node, OpenVINO within
    50 ms) and wait up to
    ``timeout`` seconds for them to return; True when none is left. Safe to call from a signal handler with
    ``timeout=0``."""
    deadline = time.monotonic() + timeout
    with _ACTIVE_CHANGED:
        for options in list(_ACTIVE):
            options.terminate = True
        while _ACTIVE:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _ACTIVE_CHANGED.wait(left)
    return True


def _release(options, call):
    """``call()``, then ``options`` leaves the calls in progress."""
    try:
        return call()
    finally:
        with _ACTIVE_CHANGED:
            _ACTIVE.discard(options)
            _ACTIVE_CHANGED.notify_all()


def _in_helper_thread(call: Callable[[], np.ndarray], options: Any) -> np.ndarray:
    """``call()`` in a daemon thread while this (main) thread waits in steps of 0.1 s, so that a KeyboardInterrupt
    is raised here at once; then the call is aborted through ``options`` and left to end on its own."""
    result: dict = {}
    done = threading.Event()

    def target() -> None:
        try:
            result["value"] = _release(options, call)
        except BaseException as exc:  # handed to the waiting thread
            result["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="dmdet-network", daemon=True).start()
    try:
        while not done.wait(0.1):
            pass
    except BaseException:
        options.terminate = True
        raise
    if "error" in result:
        raise result.pop("error")
    return result["value"]


def working_providers(model_path: str | os.PathLike | None = None) -> list[str]:
    """Providers that really start a session here (not just those onnxruntime was built with)."""
    import onnxruntime as ort

    path = Path(model_path) if model_path else default_model_path()
    working = []
    for provider in ort.get_available_providers():
        if provider not in (CPU, CUDA):
            continue
        if not path.is_file():
            working.append(f"{provider} (untested: no model)")
            continue
        try:
            session = ort.InferenceSession(str(path), providers=[provider])
        except Exception:
            continue
        if session.get_providers()[0] == provider:
            working.append(provider)
    return working
