"""The patch rows (im2col) of a zero-padded 2-D convolution, as a numba kernel.

The reduce stage builds each block's design rows one part at a time, right
before the part's Gram product, so the rows are written and read while in
cache; numpy's copy of a strided window view runs its innermost loop over
the kernel's columns (three taps), this kernel a row at a time.
"""

from ._threads import kernel_njit


@kernel_njit
def conv_patch_rows(images, size, stride, padding, positions, out):
    """Write the patch rows of ``images`` into ``out``.

    Parameters
    ----------
    images : ndarray of shape (n_samples, channels, height, width)
    size, stride, padding : int
        The square kernel, its stride and the zero padding on each side.
    positions : int64 ndarray of shape (n_samples, k)
        Flat output positions kept per sample (row-major over the output
        map); ``k == 0`` keeps every position.
    out : ndarray of shape (n_samples * n_kept, channels * size * size)
        Rows sample-major, then by position; columns in the kernel's
        (channel, row, column) order.
    """
    n_samples, channels, height, width = images.shape
    out_width = (width + 2 * padding - size) // stride + 1
    out_height = (height + 2 * padding - size) // stride + 1
    n_kept = positions.shape[1] if positions.shape[1] else out_height * out_width
    for sample in range(n_samples):
        for k in range(n_kept):
            position = positions[sample, k] if positions.shape[1] else k
            top = (position // out_width) * stride - padding
            left = (position % out_width) * stride - padding
            inside = left >= 0 and left + size <= width
            row = out[sample * n_kept + k]
            column = 0
            for channel in range(channels):
                for a in range(size):
                    y = top + a
                    if y < 0 or y >= height:
                        for b in range(size):
                            row[column + b] = 0.0
                    elif inside:
                        for b in range(size):
                            row[column + b] = images[sample, channel, y, left + b]
                    else:
                        for b in range(size):
                            x = left + b
                            row[column + b] = images[sample, channel, y, x] \
                                if 0 <= x < width else 0.0
                    column += size
