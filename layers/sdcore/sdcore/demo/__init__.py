"""Demo checkpoints built offline (no downloads): see `sdcore.demo.tiny`."""
