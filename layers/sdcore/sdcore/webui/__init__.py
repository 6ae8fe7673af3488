"""The webui's vocabulary, torch-free: sampler and schedule names, the infotext, the prompt
syntax and the PNG `parameters` chunk. The API edge validates with it; the engine maps it."""
