"""Training: fine-tuning methods, packing, the Trainer run, its callbacks and verified checkpoints."""
