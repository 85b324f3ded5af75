"""Built-in task plugins: downstream tasks a pretrained X²-VLM is fine-tuned and evaluated on."""
