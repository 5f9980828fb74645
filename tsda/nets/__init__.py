"""Plain `nn.Module`s: no Lightning, losses, optimisers or loggers here."""
