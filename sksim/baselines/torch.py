"""TorchBaseline: a trained torch ``nn.Module`` as a frozen SIM teacher.

Torch is imported only when the adapter is used, so ``import sksim`` works
without it.
"""

from contextlib import contextmanager

import numpy as np


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
            "TorchBaseline needs torch; install the CPU build with "
            "`pip install torch` (see the README)."
        ) from exc
    return torch


class TorchBaseline:
    """Wrap a trained torch module as the teacher of a SIM estimator.

    The module runs in eval mode under ``torch.no_grad()`` in batches. Forward
    hooks on its activation modules record each one's input (the
    pre-activations, flattened per sample and concatenated in forward order)
    and the module's output (logits or regression outputs). The module is a
    frozen teacher: ``clone`` returns this same adapter, so model selection
    never copies or retrains the network.

    Parameters
    ----------
    module : torch.nn.Module
        The trained network. Every activation to be recorded must be a module
        (``nn.ReLU``), not a call to ``torch.nn.functional.relu``.
    activations : tuple of type, default=None
        Module types whose inputs are recorded; ``None`` means ``(nn.ReLU,)``.
    input_shape : tuple of int, default=None
        Per-sample shape that flat rows of X are reshaped to (e.g.
        ``(1, 28, 28)`` for a convolutional model). ``None`` feeds rows as is.
    device : str or torch.device, default="cpu"
        Device the module runs on.
    batch_size : int, default=1024
        Samples per forward pass.
    dtype : {"float32", "float64"}, default="float32"
        Dtype of the input tensors (the module's parameters must match).
    """

    def __init__(self, module, *, activations=None, input_shape=None,
                 device="cpu", batch_size=1024, dtype="float32"):
        self.module = module
        self.activations = activations
        self.input_shape = input_shape
        self.device = device
        self.batch_size = batch_size
        self.dtype = dtype

    def __sklearn_clone__(self):
        return self

    def __repr__(self):
        return f"TorchBaseline({type(self.module).__name__})"

    def _activation_types(self, torch):
        if self.activations is None:
            return (torch.nn.ReLU,)
        return tuple(self.activations)

    def _reshape(self, X):
        if self.input_shape is None:
            return X
        width = int(np.prod(self.input_shape))
        if X.shape[1] != width:
            raise ValueError(
                f"X has {X.shape[1]} features but input_shape={self.input_shape} "
                f"needs {width}."
            )
        return X.reshape((X.shape[0],) + tuple(self.input_shape))

    def _checked(self, torch):
        if not isinstance(self.module, torch.nn.Module):
            raise ValueError(  # noqa: TRY004 - the documented error for a bad parameter
                f"module must be a torch.nn.Module; got {type(self.module).__name__}."
            )
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {self.batch_size!r}.")
        types = self._activation_types(torch)
        hooked = [m for m in self.module.modules() if isinstance(m, types)]
        if not hooked:
            raise ValueError(
                f"module has no activation module of type "
                f"{[t.__name__ for t in types]}: use nn.ReLU modules instead of "
                "torch.nn.functional.relu so their inputs can be recorded."
            )
        return hooked

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

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)

        Yields
        ------
        batch : slice
            The rows of X in this batch.
        pre_activations : list of ndarray of shape (batch size, block size)
            Each activation module's input (flattened), in forward order, float64.
        outputs : ndarray of shape (batch size, n_outputs)
        """
        torch = _import_torch()
        hooked = self._checked(torch)
        inputs = self._reshape(np.asarray(X))
        records = []

        def hook(mod, args, output):
            pre = args[0]
            # A subclass of nn.ReLU that computes something else (leaky,
            # in-place on a shared tensor) would corrupt the recorded states.
            if isinstance(mod, torch.nn.ReLU) and not torch.equal(torch.relu(pre), output):
                raise ValueError(
                    f"activation module {mod!r} does not output relu(input) "
                    "(in-place or custom activations cannot be recorded)."
                )
            records.append(pre.detach().reshape(pre.shape[0], -1))

        handles = [m.register_forward_hook(hook) for m in hooked]
        try:
            with self._eval_mode():
                yield from self._recorded_batches(torch, inputs, hooked, records)
        finally:
            for handle in handles:
                handle.remove()

    def _recorded_batches(self, torch, inputs, hooked, records):
        dtype = self._torch_dtype(torch)
        for start in range(0, inputs.shape[0], self.batch_size):
            batch = inputs[start:start + self.batch_size]
            records.clear()
            tensor = torch.as_tensor(_writable(batch), dtype=dtype, device=self.device)
            try:
                with torch.no_grad():
                    out = self.module(tensor)
            except ValueError:
                raise
            except Exception as exc:
                raise ValueError(
                    f"module failed on batch {start // self.batch_size} "
                    f"(samples {start}..{start + len(batch) - 1}, input shape "
                    f"{tuple(tensor.shape)}): {exc}"
                ) from exc
            if len(records) != len(hooked):
                raise ValueError(
                    f"{len(hooked)} activation modules were found but "
                    f"{len(records)} ran in the forward pass; every hooked "
                    "module must run exactly once per forward."
                )
            pre_activations = [r.cpu().double().numpy() for r in records]
            output = out.detach().reshape(out.shape[0], -1).cpu().double().numpy()
            if not (all(np.all(np.isfinite(z)) for z in pre_activations)
                    and np.all(np.isfinite(output))):
                raise ValueError(
                    "the torch module produced non-finite states or outputs.")
            yield slice(start, start + len(batch)), pre_activations, output

    def trace(self, X):
        """The teacher as a chain of weight-shared links (needs conv or
        linear layers between its ReLU modules; see
        :mod:`sksim.baselines.torch_structure`).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            A few samples (the first 8 are used) to run the module on.

        Returns
        -------
        TeacherMaps
        """
        from .torch_structure import trace_teacher

        torch = _import_torch()
        self._checked(torch)
        dtype = self._torch_dtype(torch)
        inputs = torch.as_tensor(_writable(self._reshape(np.asarray(X[:8]))),
                                 dtype=dtype, device=self.device)
        with self._eval_mode():
            return trace_teacher(torch, self.module, inputs,
                                 self._activation_types(torch),
                                 rtol=1e-4 if dtype == torch.float32 else 1e-10)

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
