"""Export: merge an adapter into its base model, verified."""
