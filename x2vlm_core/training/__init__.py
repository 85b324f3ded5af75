"""Training: pretraining, fine-tuning, the step loop, optimizer, seeding, history and progress."""
