"""The local stack: the same functions, run on one machine with the embedded backend."""
