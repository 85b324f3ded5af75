"""Moving weights between models: text-encoder re-assembly and the official-checkpoint converter."""
