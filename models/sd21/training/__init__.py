"""Training-only parts shared by the one-step SD methods (FideDiff, OSDD). Inference never imports this.

* :mod:`.discriminator` — latent-space GAN discriminator: the SD UNet's encoder copy plus a patch head,
  with the non-saturating (softplus) losses;
* :mod:`.perceptual` — Sobel edges, the edge-aware perceptual loss EA-X, LPIPS when the ``lpips``
  package is installed, and a feature-network distance for any backbone.
"""
from .discriminator import LatentDiscriminator, discriminator_loss, generator_loss
from .perceptual import FeatureDistance, RandomConvFeatures, edge_aware, lpips_distance, sobel_magnitude

__all__ = ["LatentDiscriminator", "discriminator_loss", "generator_loss", "FeatureDistance", "RandomConvFeatures",
           "edge_aware", "lpips_distance", "sobel_magnitude"]
