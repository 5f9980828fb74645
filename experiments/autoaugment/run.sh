#!/usr/bin/env bash
# experiments/autoaugment: every step of the study, from the repository root, in order.
# Each step resumes when run again (finished runs and trials are kept).
set -euo pipefail
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
TEN=(--data.train_fraction 0.1 --latent_plot false)

# 1. a policy searched on validation (the test split is never read): 24 trials of at most 15 epochs
tsda augment search -c experiments/handcrafted/base.yaml --space configs/search/order_mask_space.yaml \
    --out runs/autoaugment-search --trials 24 --workers 2 --seed 0 --epochs 15 "${TEN[@]}"
cp runs/autoaugment-search/policy.yaml experiments/autoaugment/searched_policy.yaml

# 2. RandAugment's (N, M) on validation: 9 settings x 2 seeds, at most 15 epochs, no test
tsda campaign run experiments/autoaugment/randaugment_grid.yaml --out runs/autoaugment-rand-grid --seeds 0-1 \
    --executor local --workers 2 --trainer.max_epochs 15 --test_after_fit false "${TEN[@]}"
python experiments/autoaugment/pick_randaugment.py runs/autoaugment-rand-grid   # prints the chosen condition

# 3. the study: every condition to early stopping, 5 seeds
tsda campaign run experiments/autoaugment/campaign.yaml --out runs/autoaugment --seeds 0-4 \
    --executor local --workers 2 --trainer.max_epochs 300 "${TEN[@]}"
tsda campaign report runs/autoaugment --control wrap --into against_wrap
tsda campaign report runs/autoaugment
