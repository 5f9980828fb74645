"""The 1D diffusion family: the denoiser (`nets`), its LightningModule and the sampling chains."""
