"""EAC (element-wise adaptive convolution) against a direct per-pixel loop that follows the official
CUDA kernel's indexing, and the memory-lean path against the unfold one."""
import pytest
import torch

from conftest import pack_module
from tiny_deblurdiff import single_thread  # noqa: F401  (autouse fixture)

dd = pack_module("models.deblurdiff")


def eac_per_pixel(x, kernels, size=5):
    """``idynamic_forward_kernel`` (stride 1, dilation 1, pad (k-1)/2) one output element at a time:
    ``weight`` flat index ((((n*G + g)*K + kh)*K + kw)*H + h)*W + w, ``g = c / (C / G)``."""
    n_, c_, h_, w_ = x.shape
    groups = kernels.shape[1] // (size * size)
    pad = (size - 1) // 2
    weight = kernels.contiguous().view(-1)
    data = x.contiguous().view(-1)
    out = torch.zeros(n_ * c_ * h_ * w_, dtype=torch.float64)
    for index in range(out.numel()):
        n = index // c_ // h_ // w_
        c = (index // h_ // w_) % c_
        h = (index // w_) % h_
        w = index % w_
        g = c // (c_ // groups)
        value = 0.0
        for kh in range(size):
            for kw in range(size):
                h_in, w_in = -pad + h + kh, -pad + w + kw
                if 0 <= h_in < h_ and 0 <= w_in < w_:
                    offset = ((n * c_ + c) * h_ + h_in) * w_ + w_in
                    offset_weight = ((((n * groups + g) * size + kh) * size + kw) * h_ + h) * w_ + w
                    value += float(weight[offset_weight]) * float(data[offset])
        out[index] = value
    return out.view(n_, c_, h_, w_)


@pytest.mark.parametrize("channels,groups", [(4, 4), (4, 2), (3, 1)])
def test_eac_matches_the_cuda_kernel_formula(channels, groups):
    g = torch.Generator().manual_seed(channels * 10 + groups)
    x = torch.randn(2, channels, 6, 7, generator=g)
    kernels = torch.randn(2, groups * 25, 6, 7, generator=g)
    expected = eac_per_pixel(x, kernels).float()
    assert torch.allclose(dd.eac_reference(x, kernels), expected, atol=1e-5)
    assert torch.allclose(dd.eac(x, kernels), expected, atol=1e-5)


def test_fast_path_matches_plain_path_on_latent_sizes():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 40, 56, generator=g)
    kernels = torch.randn(1, 100, 40, 56, generator=g)
    assert torch.allclose(dd.eac(x, kernels), dd.eac_reference(x, kernels), atol=1e-5)
    half = dd.eac(x.bfloat16(), kernels.bfloat16()).float()
    assert (half - dd.eac_reference(x, kernels)).abs().max() < 0.3  # runs in reduced precision too


def test_taps_are_correlation_offsets():
    """Tap (i, j) reads the pixel i-2 rows below and j-2 columns right of the output pixel; the centre
    tap (2, 2) is the identity."""
    x = torch.randn(1, 4, 9, 9, generator=torch.Generator().manual_seed(2))
    kernels = torch.zeros(1, 100, 9, 9)
    kernels[:, 12::25] = 1.0  # centre tap (2, 2) of every group
    assert torch.equal(dd.eac(x, kernels), x)
    kernels.zero_()
    kernels[:, 1::25] = 1.0  # tap (0, 1): reads two rows above, one column left
    out = dd.eac(x, kernels)
    assert torch.equal(out[..., 2:, 1:], x[..., :-2, :-1])
    assert torch.equal(out[..., :2, :], torch.zeros_like(out[..., :2, :]))


def test_bad_kernel_shapes_are_reported():
    with pytest.raises(ValueError, match="do not fit"):
        dd.eac(torch.zeros(1, 4, 8, 8), torch.zeros(1, 99, 8, 8))
    with pytest.raises(ValueError, match="groups"):
        dd.eac(torch.zeros(1, 4, 8, 8), torch.zeros(1, 75, 8, 8))
