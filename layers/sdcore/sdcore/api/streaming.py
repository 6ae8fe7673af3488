"""A response body sent in pieces as they are made, where the front door can pass them on.

API Gateway (a REST API's Lambda proxy integration) takes a function's whole answer and sends it
then: on AWS a streamed route's body arrives in one go, when it is complete. The local front door
(sdlocal/server.py) gives each of its function processes a sink: a route that streams writes each
piece to it as it is made (the status and headers come with the first), and the front door sends
them on at once. The route still returns its whole body, which the front door then does not send
a second time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from aws_lambda_powertools.event_handler import Response

# (status, headers, piece): the front door's end of a streamed answer
Sink = Callable[[int, dict[str, str], bytes], None]

_sink: ContextVar[Sink | None] = ContextVar("sd_stream_sink", default=None)


@contextmanager
def streaming_to(sink: Sink) -> Iterator[None]:
    """Within: a streamed route's pieces also go to `sink` as they are made."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


def streamed(status: int, headers: dict[str, str], pieces: Iterable[bytes]) -> Response[Any]:
    """The answer made of `pieces`, each handed to the sink (if any) as soon as it is made."""
    sink = _sink.get()
    body = bytearray()
    for piece in pieces:
        if sink is not None and piece:
            sink(status, headers, piece)
        body += piece
    content_type = headers.get("Content-Type")
    rest = {k: v for k, v in headers.items() if k != "Content-Type"}
    return Response(status, content_type, body.decode("utf-8"), rest)
