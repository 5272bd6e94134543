"""TorchBaseline: a trained torch ``nn.Module`` as a frozen SIM teacher.

Torch is imported only when the adapter is used, so ``import sksim`` works
without it.
"""

import threading
from contextlib import contextmanager, nullcontext

import numpy as np

from .torch_graph import (
    SUPPORTED_ACTIVATION_MODULES,
    check_teacher,
    module_activation,
    read_shaped,
    recording_module,
    shaped_graph,
)


class _TraceGuard:
    """Tracing patches torch's ``nn.Module.__call__`` globally while it runs
    (see torch_graph.shaped_graph), so a trace must not overlap any forward
    pass in another thread (dask runs chunks in threads, each adapter copy
    tracing its own graph): traces run alone, forward passes together."""

    def __init__(self):
        self._condition = threading.Condition()
        self._running = 0
        self._tracing = False

    @contextmanager
    def tracing(self):
        with self._condition:
            self._condition.wait_for(lambda: not self._tracing and not self._running)
            self._tracing = True
        try:
            yield
        finally:
            with self._condition:
                self._tracing = False
                self._condition.notify_all()

    @contextmanager
    def running(self):
        with self._condition:
            self._condition.wait_for(lambda: not self._tracing)
            self._running += 1
        try:
            yield
        finally:
            with self._condition:
                self._running -= 1
                self._condition.notify_all()


_GUARD = _TraceGuard()
# hooks fire in every thread's forward pass: one hooked forward at a time
_HOOK_LOCK = threading.Lock()


def _writable(batch):
    """A contiguous batch torch can wrap: read-only input (a memmap opened
    with mode "r") is copied, one batch at a time."""
    batch = np.ascontiguousarray(batch)
    return batch if batch.flags.writeable else batch.copy()


def _import_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised without torch
        raise ImportError(
            "TorchBaseline needs torch. Install the CPU build (an unpinned "
            "`pip install torch` may pull a multi-GB CUDA build): see "
            "https://pytorch.org/get-started/locally/ for the command on your "
            "platform, e.g. `python -m pip install torch --index-url "
            "https://download.pytorch.org/whl/cpu` on Linux."
        ) from exc
    return torch


class TorchBaseline:
    """Wrap a trained torch module as the teacher of a SIM estimator.

    The module's computation is read as a graph (torch.fx; see
    :mod:`sksim.baselines.torch_graph` for what it may contain): every
    activation, module or function, is a state block. The traced graph runs
    in eval mode under ``torch.no_grad()`` in batches and returns the
    module's output (logits or regression outputs) and every block's
    pre-activation (flattened per sample, concatenated in graph order). The
    module is a frozen teacher: ``clone`` returns this same adapter, so model
    selection never copies or retrains the network.

    Parameters
    ----------
    module : torch.nn.Module
        The trained network.
    activations : tuple of type, default=None
        The teacher's activation module types, each one of ``nn.ReLU``,
        ``nn.LeakyReLU``, ``nn.ReLU6``, ``nn.Hardtanh`` (a ValueError names
        any other, e.g. ``nn.Tanh``); ``None`` accepts all of them. An
        activation module of a type not listed is an error. A module whose
        graph cannot be read is recorded by hooks on modules of these types.
    input_shape : tuple of int, default=None
        Per-sample shape that flat rows of X are reshaped to (e.g.
        ``(1, 28, 28)`` for a convolutional model). ``None`` feeds rows as is.
    device : str or torch.device, default="cpu"
        Device the module runs on.
    batch_size : int, default=1024
        Samples per forward pass.
    dtype : {"float32", "float64"}, default="float32"
        Dtype of the input tensors (the module's parameters must match).
    classes : array-like of shape (n_outputs,), default=None
        For a classifier's teacher: the class label of each of the module's
        output columns, in column order (for a single logit: the negative
        class, then the positive one). :class:`~sksim.SIMClassifier` then
        sets ``classes_`` to these labels, sorted (also those absent from y),
        and permutes the teacher's columns to match; every label of y must be
        one of them, and there must be one per output column, without
        duplicates. ``None`` takes output column ``j`` to be the ``j``-th
        class of y in sorted order (``classes_[j]``); the fit checks on the
        training data that the teacher's argmax agrees with y under that
        order and raises a ValueError when it clearly does not. Ignored by
        :class:`~sksim.SIMRegressor`.
    gram_backend : {"auto", "torch", "numpy"}, default="auto"
        Where a weight-shared (convolutional or graph) fit accumulates each
        block's patch Gram matrix from the recorded batches. ``"torch"``: on
        ``device``, in float64 (the windows unfolded and multiplied there, see
        :mod:`sksim.device_reduce`; only the sums come back). ``"numpy"``: on
        the host (BLAS ``syrk``, which computes one triangle: on a CPU about
        twice as fast as torch's float64 matmul). ``"auto"``: ``"torch"`` when
        ``device`` is not the CPU, else ``"numpy"``. Both give the same sums
        up to roundoff.
    """

    def __init__(self, module, *, activations=None, input_shape=None,
                 device="cpu", batch_size=1024, dtype="float32", classes=None,
                 gram_backend="auto"):
        self.module = module
        self.activations = activations
        self.input_shape = input_shape
        self.device = device
        self.batch_size = batch_size
        self.dtype = dtype
        self.classes = classes
        self.gram_backend = gram_backend

    def gram_device(self):
        """The torch device a weight-shared fit reduces on (``gram_backend``),
        or ``None`` for the host's numpy."""
        if self.gram_backend not in ("auto", "torch", "numpy"):
            error = ValueError("gram_backend must be 'auto', 'torch' or 'numpy'; got "
                               f"{self.gram_backend!r}.")
            error.fatal = True  # a bad parameter, not a graph the flat fit could take
            raise error
        torch = _import_torch()
        device = torch.device(self.device)
        if self.gram_backend == "numpy" or (self.gram_backend == "auto"
                                            and device.type == "cpu"):
            return None
        return device

    def __sklearn_clone__(self):
        return self

    def __repr__(self):
        if self.classes is None:
            return f"TorchBaseline({type(self.module).__name__})"
        classes = list(np.asarray(self.classes).tolist())
        shown = repr(classes) if len(classes) <= 10 else repr(classes[:10])[:-1] + ", ...]"
        return f"TorchBaseline({type(self.module).__name__}, classes={shown})"

    def _activation_types(self, torch):
        """The activation module types (validated): every supported one by default."""
        supported = SUPPORTED_ACTIVATION_MODULES(torch)
        if self.activations is None:
            return supported
        types = tuple(self.activations)
        for kind in types:
            if not (isinstance(kind, type) and issubclass(kind, supported)):
                name = getattr(kind, "__name__", repr(kind))
                raise ValueError(  # noqa: TRY004 - the documented error for a bad parameter
                    f"activations: {name} is not supported; SIM models a teacher "
                    "whose activations are componentwise, monotone, 1-Lipschitz and "
                    "piecewise linear (nn.ReLU, nn.LeakyReLU with a slope in [0, 1], "
                    "nn.ReLU6, nn.Hardtanh), which the model's well-posedness and "
                    "its row problems rely on.")
        return types

    def _reshape(self, X):
        if self.input_shape is None:
            return X
        shape = tuple(self.input_shape)
        if not shape or not all(isinstance(v, (int, np.integer)) and v > 0 for v in shape):
            raise ValueError(f"input_shape must be a tuple of positive integers; got "
                             f"{self.input_shape!r}.")
        width = int(np.prod(shape))
        if X.shape[1] != width:
            raise ValueError(
                f"X has {X.shape[1]} features but input_shape={self.input_shape} "
                f"needs {width}."
            )
        return X.reshape((X.shape[0],) + shape)

    def _checked(self, torch):
        if not isinstance(self.module, torch.nn.Module):
            raise ValueError(  # noqa: TRY004 - the documented error for a bad parameter
                f"module must be a torch.nn.Module; got {type(self.module).__name__}."
            )
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {self.batch_size!r}.")
        self.gram_device()  # gram_backend checked before any forward pass
        types = self._activation_types(torch)
        if self.activations is not None:
            self._check_listed(torch, types)
        return types

    def record(self, X):
        """Run the module on X and record hidden pre-activations and outputs.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)

        Returns
        -------
        pre_activations : ndarray of shape (n_samples, n_states)
        outputs : ndarray of shape (n_samples, n_outputs)
        """
        blocks, outputs = [], []
        for _, pre_activations, out in self.iter_batches(X):
            blocks.append(np.hstack(pre_activations))
            outputs.append(out)
        return np.concatenate(blocks, axis=0), np.concatenate(outputs, axis=0)

    def iter_batches(self, X):
        """Run the module batch by batch, yielding what each batch recorded.

        The pre-activations are the inputs of the activations of the
        teacher's graph (see :mod:`sksim.baselines.torch_graph`), recorded by
        one forward pass of the traced graph that also returns them. A module
        whose graph cannot be read is recorded by hooks on its activation
        modules instead (their inputs, taken before an in-place activation
        overwrites them).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)

        Yields
        ------
        batch : slice
            The rows of X in this batch.
        pre_activations : list of ndarray of shape (batch size, block size)
            Each block's pre-activations (flattened), in forward order, float64.
        outputs : ndarray of shape (batch size, n_outputs)
        """
        torch = _import_torch()
        types = self._checked(torch)
        inputs = self._reshape(np.asarray(X))
        with self._eval_mode():
            try:
                program = self._shaped(torch, inputs)[1]
            except ValueError as exc:
                if getattr(exc, "fatal", False):
                    raise
                program = None
            if program is not None:
                yield from self._recorded_batches(torch, inputs, program)
                return
            hooked = [m for m in self.module.modules() if isinstance(m, types)]
            yield from self._hooked_batches(torch, inputs, hooked)

    def _shaped(self, torch, inputs):
        """The traced, shaped graph, its recording module and pre-activation
        nodes, traced once per module, input shape, dtype and device (under a
        lock: dask runs chunks in threads, and tracing patches torch
        globally), or the error that stopped it, raised again."""
        key = (id(self.module), tuple(inputs.shape[1:]), self.dtype, str(self.device))
        cached = self.__dict__.get("_graphs", {}).get(key)
        with _GUARD.tracing() if cached is None else nullcontext():
            cached = self.__dict__.setdefault("_graphs", {}).get(key)
            if cached is None:
                try:
                    graph_module = shaped_graph(torch, self.module,
                                                self._tensor(torch, inputs[:8]))
                    _, pre_nodes = read_shaped(torch, graph_module, key[1])
                    cached = (graph_module, recording_module(torch, graph_module,
                                                             pre_nodes), pre_nodes)
                except ValueError as exc:
                    cached = exc
                self._graphs[key] = cached
        if isinstance(cached, ValueError):
            raise cached
        return cached

    def __getstate__(self):
        # the traced graphs are rebuilt where the adapter is unpickled
        state = dict(self.__dict__)
        state.pop("_graphs", None)
        return state

    def _check_listed(self, torch, types):
        """``activations`` lists the teacher's activation types: a module of
        another type would be fitted as what it is, so say so."""
        for name, module in self.module.named_modules():
            if module_activation(torch, module) is not None and \
                    not isinstance(module, types):
                raise ValueError(
                    f"activations={[t.__name__ for t in types]} but the teacher "
                    f"also has {type(module).__name__} ({name}); list every "
                    "activation type of the teacher, or leave activations at None.")

    def _tensor(self, torch, batch):
        return torch.as_tensor(_writable(batch), dtype=self._torch_dtype(torch),
                               device=self.device)

    def _forward(self, torch, program, tensor, start):
        try:
            with _GUARD.running(), torch.no_grad():
                return program(tensor)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(
                f"module failed on batch {start // self.batch_size} "
                f"(samples {start}..{start + len(tensor) - 1}, input shape "
                f"{tuple(tensor.shape)}): {exc}; if the shape is wrong, set "
                "TorchBaseline's input_shape to the per-sample shape the module "
                "expects (e.g. input_shape=(1, 8, 8) for one-channel 8x8 images)."
            ) from exc

    def _recorded_batches(self, torch, inputs, program):
        for start in range(0, inputs.shape[0], self.batch_size):
            tensor = self._tensor(torch, inputs[start:start + self.batch_size])
            out, *records = self._forward(torch, program, tensor, start)
            yield self._finished(start, records, out)

    def _hooked_batches(self, torch, inputs, hooked):
        """Record the inputs of the activation modules ``hooked``, taken before
        they run (an in-place activation overwrites its input)."""
        if not hooked:
            raise ValueError(
                "module has no activation module of the supported types "
                f"{[t.__name__ for t in self._activation_types(torch)]} and its graph "
                "could not be read (see the error of TorchBaseline.trace).")
        if not all(type(m) is torch.nn.ReLU for m in hooked):
            raise ValueError(
                "the teacher's graph could not be read (see TorchBaseline.trace), so "
                "it can only be fitted as a flat ReLU model, but it has activations "
                f"{sorted({type(m).__name__ for m in hooked})}: a ReLU model would "
                "silently differ from the teacher.")
        for start in range(0, inputs.shape[0], self.batch_size):
            tensor = self._tensor(torch, inputs[start:start + self.batch_size])
            out, records = self._hooked_forward(torch, hooked, tensor, start)
            if len(records) != len(hooked):
                raise ValueError(
                    f"{len(hooked)} activation modules were found but "
                    f"{len(records)} ran in the forward pass; the teacher's graph "
                    "could not be read (see TorchBaseline.trace), and a module "
                    "used twice cannot be recorded by hooks.")
            yield self._finished(start, records, out)

    def _hooked_forward(self, torch, hooked, tensor, start):
        """One forward pass with the hooks in place; under the lock, since a
        hook would also fire in a forward pass of another thread (dask)."""
        records = []

        def hook(mod, args):
            records.append(args[0].detach().reshape(args[0].shape[0], -1).clone())

        with _HOOK_LOCK:
            handles = [m.register_forward_pre_hook(hook) for m in hooked]
            try:
                return self._forward(torch, self.module, tensor, start), records
            finally:
                for handle in handles:
                    handle.remove()

    @staticmethod
    def _finished(start, records, out):
        n = out.shape[0]
        pre_activations = [r.detach().reshape(n, -1).cpu().double().numpy()
                           for r in records]
        output = out.detach().reshape(n, -1).cpu().double().numpy()
        if not (all(np.all(np.isfinite(z)) for z in pre_activations)
                and np.all(np.isfinite(output))):
            raise ValueError("the torch module produced non-finite states or outputs.")
        return slice(start, start + n), pre_activations, output

    def trace(self, X):
        """The teacher as a weight-shared model: its graph read as blocks and
        links (see :mod:`sksim.baselines.torch_graph`), checked numerically on
        the first samples of X.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            A few samples (the first 8 are used) to run the module on.

        Returns
        -------
        TeacherMaps

        Raises
        ------
        GraphError
            (a ValueError) naming the node of the graph that is not supported.
        """
        torch = _import_torch()
        self._checked(torch)
        inputs = self._reshape(np.asarray(X[:8]))
        with self._eval_mode():
            graph_module, program, _ = self._shaped(torch, inputs)
            maps, _ = read_shaped(torch, graph_module, tuple(inputs.shape[1:]))
            _, pre_activations, outputs = self._finished(
                0, *self._split(self._forward(torch, program, self._tensor(torch, inputs),
                                              0)))
        rtol = 1e-4 if self._torch_dtype(torch) == torch.float32 else 1e-10
        check_teacher(maps, np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1),
                      pre_activations, outputs, rtol)
        return maps

    @staticmethod
    def _split(result):
        out, *records = result
        return records, out

    def _torch_dtype(self, torch):
        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]

    @contextmanager
    def _eval_mode(self):
        """Run the module in eval mode, restoring its training flag after."""
        was_training = self.module.training
        self.module.eval()
        try:
            yield
        finally:
            self.module.train(was_training)
