"""The torch engine: `DiffusersEngine` implements the engine port (`sdcore.ports.Engine`) on
diffusers. Only the inference function imports it; nothing here imports a use case."""
