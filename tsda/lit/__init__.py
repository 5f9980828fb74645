"""LightningModules: losses, optimisers, metrics and logging live here."""
