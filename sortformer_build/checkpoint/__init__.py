"""Where the weights come from: the Hugging Face Hub, a local .nemo file, or random weights made here."""
