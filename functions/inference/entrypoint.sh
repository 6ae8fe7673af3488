#!/bin/sh
# The inference image's entrypoint: one image, two runtimes.
#   SageMaker runs `docker run <image> serve`: its container contract (/ping, /invocations on
#   port 8080), served by inference_function.serve.
#   Lambda passes the handler (the image's CMD, or the function's ImageConfig.Command): the base
#   image's own entrypoint, which runs the runtime interface client (or, outside Lambda, the
#   runtime interface emulator). The CUDA build (Dockerfile.cuda) has no Lambda runtime: it
#   serves only, `serve` being its CMD.
set -eu
if [ "${1:-}" = "serve" ]; then
    shift
    exec python -m inference_function.serve "$@"
fi
exec /lambda-entrypoint.sh "$@"
