"""Classical deblurring baselines, for comparison with the learned models: blind kernel estimation
(Cho & Lee 2009 style) and regularised deconvolution (Wiener with a gradient prior, Richardson–Lucy)."""
from .deconvolution import richardson_lucy, wiener_deconvolve
from .kernel_estimation import EstimationSettings, estimate_kernel, blind_deblur

__all__ = ["richardson_lucy", "wiener_deconvolve", "EstimationSettings", "estimate_kernel", "blind_deblur"]
