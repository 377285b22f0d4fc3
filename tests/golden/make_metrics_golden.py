"""Reference PSNR/SSIM values for tests/test_metrics.py, computed with scikit-image (not a pack
requirement; run with any Python that has it):

    PYTHONPATH=/path/to/site-packages-with-skimage python tests/golden/make_metrics_golden.py

The test images are analytic (sines), so the test rebuilds them without any file.
"""
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def test_images():
    y, x = np.mgrid[0:40, 0:48].astype(np.float64)
    a = np.stack([0.5 + 0.4 * np.sin(x / 3.0 + c) * np.cos(y / 5.0 - c) for c in range(3)], -1)
    b = np.clip(a + 0.08 * np.sin(x * 1.7 + y * 0.9)[..., None] - 0.03, 0, 1)
    return a, b


if __name__ == "__main__":
    a, b = test_images()
    print("psnr", repr(peak_signal_noise_ratio(a, b, data_range=1.0)))
    print("ssim", repr(structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                             sigma=1.5, use_sample_covariance=False)))
