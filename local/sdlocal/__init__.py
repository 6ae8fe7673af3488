"""The developer's toolbox around the service: the local stack (`make run`: the functions on
one machine with the embedded backend), the `sd` CLI, the Python client and the demo models.
Not part of the Lambda layer: it imports the layer and the functions, never the reverse."""
