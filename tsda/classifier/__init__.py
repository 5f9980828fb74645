"""The traffic classifier family: its nets (`nets`), its LightningModule (`module`) and the
ensemble of N classifier runs trained as one batched model (`ensemble`)."""
