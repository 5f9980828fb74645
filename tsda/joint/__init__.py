"""Joint training: a classifier and a generator trained together end to end (`module`); the
generator half's interface (`part`), its two generators, the cVAE-GAN (`gan`) and the diffusion
denoiser (`diffusion`), built by name (`generators`); the latent objectives (`objectives`) and
the schedule of who trains when (`schedule`)."""
