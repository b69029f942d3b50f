"""Ray actors of the split-computing stream (plain classes; the runner wraps them with ``ray.remote``).

source -> HeadModel -> Encoder -> Transport(link) -> Decoder -> TailModel -> Sink

or fused, one process per edge and one per cloud replica:
EdgeNode (source, head, encoder, transport) -> CloudNode (decoder, tail) -> Sink

Importing this package does not import Ray or torch; each class imports what it needs.
"""

from actors.codec_stages import Decoder, Encoder
from actors.fused import CloudNode, EdgeHost, EdgeNode
from actors.model_stages import HeadModel, TailModel
from actors.sink import Sink
from actors.source import Source
from actors.transport import Transport

__all__ = [
    "CloudNode",
    "Decoder",
    "EdgeHost",
    "EdgeNode",
    "Encoder",
    "HeadModel",
    "Sink",
    "Source",
    "TailModel",
    "Transport",
]
