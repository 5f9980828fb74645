"""Builders the tests share: tiny valid flow tables (`flows`), tiny data, classifiers and GANs
(`tiny`), an offline W&B run reader (`wandb`), and the DDP probe callback (`ddp_probe`). The
expensive objects built from them once per session are the fixtures of `tests/conftest.py`."""
