"""One BLAS thread for the products that split their reduction across threads.

A multi-threaded OpenBLAS product whose reduction dimension is long (a Gram
matrix ``W^T W`` over many rows, an eigensolver) synchronises its threads many
times; on a machine whose other cores are busy each synchronisation waits for
a descheduled thread, and such a product was measured 27-57x slower with two
threads than with one (a 2,000 x 192 Gram: 87 ms against 3.2 ms; 40,000 x 80:
1.7 s against 0.03 s), while a product with a short reduction (``X B^T`` in
predict) still gained from the second thread. The controller is built once:
building one scans the loaded libraries (~2 ms a call, 0.4 s of a
cross-validation's 5.6 s).
"""

from contextlib import contextmanager

_controller = None


@contextmanager
def single_threaded_blas():
    """Run the block with BLAS limited to one thread."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    with _controller.limit(limits=1, user_api="blas"):
        yield
