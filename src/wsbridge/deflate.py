"""permessage-deflate (RFC 7692) for frames shared by many clients. No I/O.

A server that answers every offer with ``server_no_context_takeover`` compresses each
message on its own: nothing in it refers to an earlier message. The compressed bytes of an
event then depend only on the event and on the window size the client allowed
(``server_max_window_bits``), not on the client, so they can be computed once and written
to every client that negotiated the same window. :func:`deflate_text_frame` builds that
frame; :class:`~wsbridge.outbox.Frame` caches it per window size.

Negotiating the extension and decompressing what clients send (with their own context
takeover, and a bound on the decompressed size) is the server's side of it.
"""

from __future__ import annotations

import zlib

__all__ = [
    "DEFAULT_THRESHOLD",
    "MAX_WINDOW_BITS",
    "MIN_WINDOW_BITS",
    "compress_message",
    "deflate_text_frame",
]

#: Text frames shorter than this many bytes are sent uncompressed by default: below it,
#: deflate saves a few bytes per message and costs a compression each (docs/performance.md).
DEFAULT_THRESHOLD = 128
#: The largest LZ77 window RFC 7692 allows: 2**15 bytes.
MAX_WINDOW_BITS = 15
#: The smallest window zlib can compress raw deflate with. RFC 7692 allows 8, but zlib
#: refuses it for raw streams, so an offer that demands 8 cannot be accepted.
MIN_WINDOW_BITS = 9

_TAIL = b"\x00\x00\xff\xff"


def compress_message(payload: bytes, window_bits: int = MAX_WINDOW_BITS) -> bytes:
    """Compress one whole message, independently of any other (no context takeover).

    Raw DEFLATE with a sync flush, without the final ``00 00 ff ff`` (RFC 7692, 7.2.1).
    """
    if not MIN_WINDOW_BITS <= window_bits <= MAX_WINDOW_BITS:
        raise ValueError(f"window_bits must be {MIN_WINDOW_BITS}..{MAX_WINDOW_BITS}")
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    # A sync flush always ends with an empty stored block: its four bytes are implied.
    return data[:-4] if data.endswith(_TAIL) else data  # pragma: no branch


def deflate_text_frame(payload: bytes, window_bits: int = MAX_WINDOW_BITS) -> bytes | None:
    """``payload`` (UTF-8 text) as one unmasked, compressed (RSV1) text frame.

    ``None`` when compression would not make the frame smaller: send it plain then,
    which RFC 7692 allows for any message.
    """
    data = compress_message(payload, window_bits)
    n = len(data)
    if n >= len(payload):
        return None
    # FIN, RSV1 (compressed), opcode 1 (text).
    if n < 126:
        header = bytes((0xC1, n))
    elif n < 65536:
        header = bytes((0xC1, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0xC1, 127)) + n.to_bytes(8, "big")
    return header + data
