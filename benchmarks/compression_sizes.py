"""What permessage-deflate saves per frame, by frame: the data behind serve's threshold.

Prints, for wsbridge's own control frames, each of the ten reference example events and a
20-position ``portfolio:update``, the frame's JSON size, its size compressed on its own
(as ``wsbridge serve`` compresses, without context takeover, 15-bit window), and the CPU
time of compressing it once and of inflating it once (what each receiving client pays)::

    python benchmarks/compression_sizes.py
"""

from __future__ import annotations

import json
import sys
import timeit
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from payloads import portfolio  # noqa: E402
from tests.support.samples import REFERENCE_EXAMPLES  # noqa: E402

from wsbridge.deflate import compress_message  # noqa: E402

_TAIL = b"\x00\x00\xff\xff"


def frames() -> dict[str, str]:
    """The frames measured, by name."""
    found = {
        "pong": '{"type":"pong"}',
        "broker status": '{"type":"broker","status":"up"}',
        "subscription ack": '{"type":"subscribed","channels":["trade:executed"],"id":1}',
    }
    for channel, data in REFERENCE_EXAMPLES.items():
        found[channel] = json.dumps({"channel": channel, "data": data}, separators=(",", ":"))
    found["portfolio:update, 20 positions"] = json.dumps(
        {"channel": "portfolio:update", "data": portfolio(20)}, separators=(",", ":")
    )
    return found


def main() -> None:
    """Print the Markdown table."""
    print("| frame | JSON B | compressed B | saved | µs to compress | µs to inflate |")
    print("|---|---:|---:|---:|---:|---:|")
    n = 2000
    for name, text in sorted(frames().items(), key=lambda item: len(item[1])):
        payload = text.encode()
        data = compress_message(payload)

        def inflate(data: bytes = data) -> bytes:
            return zlib.decompressobj(-15).decompress(data + _TAIL)

        def compress(payload: bytes = payload) -> bytes:
            return compress_message(payload)

        compress_us = min(timeit.repeat(compress, number=n, repeat=3))
        inflate_us = min(timeit.repeat(inflate, number=n, repeat=3))
        saved = 1 - len(data) / len(payload)
        print(
            f"| {name} | {len(payload)} | {len(data)} | {saved:.0%} "
            f"| {compress_us / n * 1e6:.1f} | {inflate_us / n * 1e6:.1f} |"
        )


if __name__ == "__main__":
    main()
