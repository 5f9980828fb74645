"""Joint training: a classifier and a generator trained together end to end (`module`), the
generator half's interface and its cVAE-GAN (`gan`), the schedule of who trains when."""
