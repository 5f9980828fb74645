"""The packet transformer family: nets, LightningModule and the packet vocabulary (`tokens`)."""
