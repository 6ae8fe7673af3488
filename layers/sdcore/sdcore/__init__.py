"""Shared package of the serverless Stable Diffusion API: models, ports, use cases, adapters."""
