"""The conditional GAN (cVAE-GAN) family: nets, LightningModule, losses, conditioning, prior."""
