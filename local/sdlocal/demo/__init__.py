"""Demo checkpoints built offline (no downloads): see `sdlocal.demo.tiny`."""
