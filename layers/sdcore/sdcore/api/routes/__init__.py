"""The HTTP routes, as Powertools routers: `native` (generation, tasks, models), `webui` (the
AUTOMATIC1111 API, `/sdapi/v1`) and `admin` (users, models, functions). Each route parses the
request, calls one use case and returns a response model; errors map in `sdcore.api.errors`."""
