"""Guards on what users send: the address guard for URLs they give, the prompt filter, and the
checks that a model file is what it claims to be. Torch-free; each refuses with a reason."""
