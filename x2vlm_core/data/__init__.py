"""Data plumbing shared by the data plugins and the trainer: records, video decoding, transforms, batching."""
