"""Compiled loops (numba) for the memory-bound passes of a training step: batch norm's statistics
and normalization, alone or fused with a ReLU or a 2x2 max pooling, the 2x2 max pooling alone,
im2col / col2im, and Adam.
Each loop reads its inputs once or twice and writes each output once, where numpy makes a pass per
operation; where a loop stands for numpy passes (Adam, the ReLU, the running statistics' blend) it
makes their roundings in their order, so the bytes are numpy's.

Portable bytes: compiled without fastmath and without parallel, so LLVM neither reassociates nor
contracts a multiply and an add into an FMA; every sum runs in a fixed order (over rows, in
float64) and is vectorized only across channels, whose lanes are independent; no transcendental
function (sqrt is exact). The bytes are then the same whatever CPU the code is compiled for
(NUMBA_CPU_NAME), while the host's vector width still speeds up the loops. A change to any loop's
order of operations raises bnlab.numerics.KERNELS_VERSION, which runs record.

The layer-style functions built on these (forward returns (out, cache)) are bnlab.nn.fused's; the
CS231n numpy layers stay the readable reference they are tested against.
"""

from __future__ import annotations

import hashlib
import os

from bnlab.numerics import kernel_cache_dir

# before numba loads, which reads it once: compiled kernels are cached in bnlab's cache folder
os.environ.setdefault("NUMBA_CACHE_DIR", kernel_cache_dir())

import numba  # noqa: E402
import numpy as np  # noqa: E402


def target_key() -> str:
    """A short name for what numba compiles for here (target, CPU name and features), as its
    cache keys compiled kernels."""
    from numba.core.registry import cpu_target

    magic = cpu_target.target_context.codegen().magic_tuple()
    return hashlib.sha256(repr(magic).encode()).hexdigest()[:12]


# Flat indices are unsigned: numba then skips the check for negative (wrap-around) indices, which
# would keep LLVM from vectorizing the loops.
U = numba.uint64
# cache=True: compiled once per signature and CPU, on disk (bnlab.numerics.kernel_cache_dir)
jit = numba.njit(cache=True, fastmath=False, error_model="numpy", nogil=True)


@jit
def mean_var(x):
    """Per column of x (M, C) (C-contiguous): the mean and the biased variance, in float64, two passes."""
    m, c = x.shape
    src, cu = x.reshape(-1), U(c)
    total = np.zeros(c)
    for r in range(U(m)):
        for k in range(cu):
            total[k] += src[r * cu + k]
    mean = total / m
    squares = np.zeros(c)
    for r in range(U(m)):
        for k in range(cu):
            d = src[r * cu + k] - mean[k]
            squares[k] += d * d
    return mean, squares / m


@jit
def normalize(x, mean, inv_std, gamma, beta):
    """x_hat = (x - mean) * inv_std and out = x_hat * gamma + beta for x (M, C), in one pass."""
    m, c = x.shape
    x_hat, out = np.empty_like(x), np.empty_like(x)
    src, hat, dst, cu = x.reshape(-1), x_hat.reshape(-1), out.reshape(-1), U(c)
    for r in range(U(m)):
        for k in range(cu):
            v = (src[r * cu + k] - mean[k]) * inv_std[k]
            hat[r * cu + k] = v
            dst[r * cu + k] = v * gamma[k] + beta[k]
    return x_hat, out


@jit
def batch_statistics(x, running_mean, running_var, old_share, new_share, eps):
    """Batch norm's train-mode statistics of x (M, C) in one call, in x's dtype: the mean and
    inv_std = 1 / sqrt(var + eps) (mean_var's float64 sums, cast once), and the running statistics
    blended as norms.blend_running blends them: old_share * running + new_share * statistic,
    old_share in the running statistics' dtype and new_share in x's, as numpy casts the two."""
    mean64, var64 = mean_var(x)
    c = x.shape[1]
    mean, var, inv_std = np.empty(c, x.dtype), np.empty(c, x.dtype), np.empty(c, x.dtype)
    blended_mean, blended_var = np.empty_like(running_mean), np.empty_like(running_var)
    for k in range(c):
        mean[k], var[k] = mean64[k], var64[k]  # rounded to x's dtype
        inv_std[k] = 1.0 / np.sqrt(var64[k] + eps)
        blended_mean[k] = old_share * running_mean[k] + new_share * mean[k]
        blended_var[k] = old_share * running_var[k] + new_share * var[k]
    return mean, inv_std, blended_mean, blended_var


@jit
def _maximum(a, b):
    """np.maximum(a, b): a NaN wins, and on a tie (0 and -0 included) the second."""
    return a if (a > b or a != a) else b


@jit
def normalize_relu(x, mean, inv_std, gamma, beta):
    """normalize's x_hat and out, and relu(out) as np.maximum(out, 0) gives it (NaN kept, -0 to 0)."""
    x_hat, out = normalize(x, mean, inv_std, gamma, beta)
    act = np.empty_like(out)
    src, dst, zero = out.reshape(-1), act.reshape(-1), np.zeros(1, out.dtype)[0]
    for i in range(U(src.size)):
        dst[i] = _maximum(src[i], zero)
    return x_hat, out, act


@jit
def scale_shift_relu(x, scale, shift):
    """out = x * scale + shift for x (M, C), rounded after the product and after the sum as numpy's
    two passes round, and relu(out) as np.maximum(out, 0) gives it: test-mode batch norm + ReLU."""
    m, c = x.shape
    out, act = np.empty_like(x), np.empty_like(x)
    src, dst, rel, cu = x.reshape(-1), out.reshape(-1), act.reshape(-1), U(c)
    zero = np.zeros(1, x.dtype)[0]
    for r in range(U(m)):
        for k in range(cu):
            v = src[r * cu + k] * scale[k] + shift[k]
            dst[r * cu + k] = v
            rel[r * cu + k] = _maximum(v, zero)
    return out, act


@jit
def normalize_relu_backward(dout, out, x_hat, gamma, inv_std):
    """normalize_backward of the gradient a relu passes back to out, dout * (out > 0) as numpy
    computes it (a product with 1 or 0, so -0 and NaN stay what they are)."""
    grad = np.empty_like(dout)
    src, pre, dst = dout.reshape(-1), out.reshape(-1), grad.reshape(-1)
    one, zero = np.ones(1, dout.dtype)[0], np.zeros(1, dout.dtype)[0]
    for i in range(U(src.size)):
        dst[i] = src[i] * (one if pre[i] > zero else zero)
    return normalize_backward(grad, x_hat, gamma, inv_std)


@jit
def normalize_backward(dout, x_hat, gamma, inv_std):
    """Batch norm's backward in closed form for (M, C): dgamma, dbeta summed in float64, then
    dx = dout * a - x_hat * b - c with a = gamma * inv_std, b = a * dgamma / M, c = a * dbeta / M."""
    m, c = dout.shape
    grad, hat, cu = dout.reshape(-1), x_hat.reshape(-1), U(c)
    dbeta, dgamma = np.zeros(c), np.zeros(c)
    for r in range(U(m)):
        for k in range(cu):
            dbeta[k] += grad[r * cu + k]
            dgamma[k] += grad[r * cu + k] * hat[r * cu + k]
    a = gamma * inv_std
    b = (a * (dgamma / m)).astype(dout.dtype)
    shift = (a * (dbeta / m)).astype(dout.dtype)
    dx = np.empty_like(dout)
    dst = dx.reshape(-1)
    for r in range(U(m)):
        for k in range(cu):
            dst[r * cu + k] = grad[r * cu + k] * a[k] - hat[r * cu + k] * b[k] - shift[k]
    return dx, dgamma.astype(dout.dtype), dbeta.astype(dout.dtype)


@jit
def _window(i, r, s, height, width, c):
    """Flat offsets in (N, H, W, C) of the 2x2 window (r, s)'s top left, top right, bottom left and
    bottom right pixels, channel 0."""
    top_left = U(((i * height + 2 * r) * width + 2 * s) * c)
    return top_left, top_left + U(c), top_left + U(width * c), top_left + U(width * c + c)


@jit
def normalize_maxpool(h, mean, inv_std, gamma, beta):
    """Batch norm's output (x - mean) * inv_std * gamma + beta of h (N, H, W, C) (C-contiguous),
    2x2 max-pooled with stride 2: out (N, H/2, W/2, C) and the winning offset (uint8: 0 top left,
    1 top right, 2 bottom left, 3 bottom right; the first in that order on ties)."""
    n, height, width, c = h.shape
    out = np.empty((n, height // 2, width // 2, c), h.dtype)
    won = np.empty((n, height // 2, width // 2, c), np.uint8)
    src, dst, which_of, cu = h.reshape(-1), out.reshape(-1), won.reshape(-1), U(c)
    q = U(0)
    for i in range(n):
        for r in range(height // 2):
            for s in range(width // 2):
                o0, o1, o2, o3 = _window(i, r, s, height, width, c)
                for k in range(cu):
                    v0 = (src[o0 + k] - mean[k]) * inv_std[k] * gamma[k] + beta[k]
                    v1 = (src[o1 + k] - mean[k]) * inv_std[k] * gamma[k] + beta[k]
                    v2 = (src[o2 + k] - mean[k]) * inv_std[k] * gamma[k] + beta[k]
                    v3 = (src[o3 + k] - mean[k]) * inv_std[k] * gamma[k] + beta[k]
                    best, which = v0, 0
                    if v1 > best:
                        best, which = v1, 1
                    if v2 > best:
                        best, which = v2, 2
                    if v3 > best:
                        best, which = v3, 3
                    dst[q + k] = best
                    which_of[q + k] = which
                q += cu
    return out, won


@jit
def maxpool(h):
    """The 2x2 max pool of stride 2 of h (N, H, W, C) (C-contiguous, H and W even) as
    conv.max_pool_forward_fast computes it: np.maximum of each window's two columns, then of its
    two rows, and the winning offset (uint8: 0 top left, 1 top right, 2 bottom left, 3 bottom right;
    a tie goes to the left column, then to the top row)."""
    n, height, width, c = h.shape
    out = np.empty((n, height // 2, width // 2, c), h.dtype)
    won = np.empty((n, height // 2, width // 2, c), np.uint8)
    src, dst, which_of, cu = h.reshape(-1), out.reshape(-1), won.reshape(-1), U(c)
    q = U(0)
    for i in range(n):
        for r in range(height // 2):
            for s in range(width // 2):
                o0, o1, o2, o3 = _window(i, r, s, height, width, c)
                for k in range(cu):
                    left, right = src[o0 + k], src[o1 + k]
                    bottom_left, bottom_right = src[o2 + k], src[o3 + k]
                    top, bottom = _maximum(left, right), _maximum(bottom_left, bottom_right)
                    if bottom > top:
                        which_of[q + k] = 3 if bottom_right > bottom_left else 2
                    else:
                        which_of[q + k] = 1 if right > left else 0
                    dst[q + k] = _maximum(top, bottom)
                q += cu
    return out, won


@jit
def maxpool_backward(dpool, won, height, width):
    """Backward of maxpool: dx (N, H, W, C) holds dpool * 1 at each window's winner and dpool * 0
    elsewhere, as conv.max_pool_backward_fast multiplies (so -0 and NaN stay what numpy makes them)."""
    n, _, _, c = dpool.shape
    dx = np.empty((n, height, width, c), dpool.dtype)
    grad, which_of, dst, cu = dpool.reshape(-1), won.reshape(-1), dx.reshape(-1), U(c)
    one, zero = np.ones(1, dpool.dtype)[0], np.zeros(1, dpool.dtype)[0]
    q = U(0)
    for i in range(n):
        for r in range(height // 2):
            for s in range(width // 2):
                corners = _window(i, r, s, height, width, c)
                for corner in range(4):  # one store stream per loop: LLVM vectorizes it (4 at once: it did not)
                    o = corners[corner]
                    for k in range(cu):
                        dst[o + k] = grad[q + k] * (one if which_of[q + k] == corner else zero)
                q += cu
    return dx


@jit
def normalize_maxpool_backward(dpool, won, h, mean, inv_std, gamma):
    """Backward of normalize_maxpool: the pooled gradient reaches each window's winner, then batch
    norm's closed form over all N*H*W positions (x_hat recomputed from h). dgamma and dbeta are
    summed over the winners only (the other positions' gradient is 0), in float64."""
    n, height, width, c = h.shape
    grad, which_of, src, cu = dpool.reshape(-1), won.reshape(-1), h.reshape(-1), U(c)
    dbeta, dgamma = np.zeros(c), np.zeros(c)
    q = U(0)
    for i in range(n):
        for r in range(height // 2):
            for s in range(width // 2):
                top_left = _window(i, r, s, height, width, c)[0]
                for k in range(cu):
                    d = grad[q + k]
                    o = U(which_of[q + k])
                    winner = top_left + (o >> U(1)) * U(width * c) + (o & U(1)) * cu + k
                    x_hat = (src[winner] - mean[k]) * inv_std[k]
                    dbeta[k] += d
                    dgamma[k] += d * x_hat
                q += cu
    m = n * height * width
    a = gamma * inv_std
    b = (a * (dgamma / m)).astype(h.dtype)
    shift = (a * (dbeta / m)).astype(h.dtype)
    dx = np.empty_like(h)
    dst = dx.reshape(-1)
    zero = np.zeros(1, h.dtype)[0]
    q = U(0)
    for i in range(n):
        for r in range(height // 2):
            for s in range(width // 2):
                offsets = _window(i, r, s, height, width, c)
                for o in range(4):
                    base = offsets[o]
                    for k in range(cu):
                        d = grad[q + k] if which_of[q + k] == o else zero
                        x_hat = (src[base + k] - mean[k]) * inv_std[k]
                        dst[base + k] = d * a[k] - x_hat * b[k] - shift[k]
                q += cu
    return dx, dgamma.astype(h.dtype), dbeta.astype(h.dtype)


@jit
def im2col(x, kh, kw, pad, stride, h_out, w_out):
    """The windows of x (N, H, W, C) (C-contiguous), zero-padded by `pad`, as the rows of
    cols (N*h_out*w_out, kh*kw*C), each row in (kh, kw, C) order; every value written once."""
    n, height, width, c = x.shape
    cols = np.empty((n * h_out * w_out, kh * kw * c), x.dtype)
    src, dst = x.reshape(-1), cols.reshape(-1)
    zero = np.zeros(1, x.dtype)[0]
    p = U(0)
    for i in range(n):
        for r in range(h_out):
            for s in range(w_out):
                for a in range(kh):
                    y = r * stride + a - pad
                    x0 = s * stride - pad
                    if 0 <= y < height and stride == 1 and 0 <= x0 and x0 + kw <= width:
                        run = U(kw * c)  # stride 1, inside: the window row is contiguous in x
                        start = U(((i * height + y) * width + x0) * c)
                        for k in range(run):
                            dst[p + k] = src[start + k]
                        p += run
                        continue
                    for b in range(kw):
                        if 0 <= y < height and 0 <= x0 + b < width:
                            start = U(((i * height + y) * width + x0 + b) * c)
                            for k in range(U(c)):
                                dst[p + k] = src[start + k]
                        else:
                            for k in range(U(c)):
                                dst[p + k] = zero
                        p += U(c)
    return cols


@jit
def col2im(dcols, n, height, width, c, kh, kw, pad, stride, h_out, w_out):
    """The adjoint of im2col: each row of dcols (N*h_out*w_out, kh*kw*C) added back to its window
    of dx (N, H, W, C), rows in order, offsets in (kh, kw) order (a fixed order of the sums)."""
    dx = np.zeros((n, height, width, c), dcols.dtype)
    src, dst = dcols.reshape(-1), dx.reshape(-1)
    p = U(0)
    for i in range(n):
        for r in range(h_out):
            for s in range(w_out):
                for a in range(kh):
                    y = r * stride + a - pad
                    x0 = s * stride - pad
                    if 0 <= y < height and stride == 1 and 0 <= x0 and x0 + kw <= width:
                        run = U(kw * c)
                        start = U(((i * height + y) * width + x0) * c)
                        for k in range(run):
                            dst[start + k] += src[p + k]
                        p += run
                        continue
                    for b in range(kw):
                        if 0 <= y < height and 0 <= x0 + b < width:
                            start = U(((i * height + y) * width + x0 + b) * c)
                            for k in range(U(c)):
                                dst[start + k] += src[p + k]
                        p += U(c)
    return dx


@jit
def adam_update(w, dw, m, v, beta1, keep1, beta2, keep2, inv_root_c2, epsilon, step):
    """One Adam update of flat w in place, in one pass (m and v updated in place too), with the
    operations and roundings of bnlab.nn.optim.adam's numpy passes: m = m*beta1 + dw*keep1,
    v = v*beta2 + dw*dw*keep2, w = w - m / (sqrt(v)*inv_root_c2 + epsilon) * step. Scalars in
    w's dtype."""
    for i in range(U(w.size)):
        g = dw[i]
        m[i] = m[i] * beta1 + g * keep1
        v[i] = v[i] * beta2 + g * g * keep2
        w[i] = w[i] - m[i] / (np.sqrt(v[i]) * inv_root_c2 + epsilon) * step
