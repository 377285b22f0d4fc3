"""FideDiff (Liu et al., ICLR 2026): one-step deblurring on Stable Diffusion 2.1, guided by per-pixel
blur kernels (estimator M) and a predicted blur level used as the timestep (regressor T)."""
