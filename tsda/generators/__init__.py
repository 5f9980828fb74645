"""Generators: the contract every generator family fulfils (`base`), the classifier guide and
its class regions (`guide`, `regions`), the EMA of weights (`ema`) and the variation pieces
(`variation`) they share; one subfolder per family (`gan`, `diffusion`, `transformer`), each
with its nets, its LightningModule and its own losses or sampling."""
