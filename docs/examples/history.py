"""Channels with history: declare them, publish, and resume a subscriber after a drop."""

import anyio

from wsbridge import Broadcaster, History, Position, Registry

# Keep the last 500 events of every "orders:*" channel, for 5 minutes after the last one.
registry = Registry(history={"orders:*": History(size=500, ttl=300)})


async def main() -> list[int]:
    async with Broadcaster("memory://", registry=registry) as broadcaster:
        async with broadcaster.subscriber() as subscriber:
            started = await subscriber.subscribe(["orders:eu"])
            await broadcaster.publish("orders:eu", {"id": 1})
            [first] = await subscriber.get()  # {"channel":...,"data":...,"offset":1}
        position = started["orders:eu"].position
        assert position is not None

        # Published while nobody listens: kept in the channel's history.
        await broadcaster.publish("orders:eu", {"id": 2})
        await broadcaster.publish("orders:eu", {"id": 3})

        async with broadcaster.subscriber() as subscriber:
            seen = Position(position.epoch, first.offset)
            resumed = await subscriber.subscribe(["orders:eu"], since={"orders:eu": seen})
            assert resumed["orders:eu"].recovered  # False: it could not, and says so
            with anyio.fail_after(5):
                missed = await subscriber.get()
            return [frame.offset for frame in missed]


if __name__ == "__main__":
    print(anyio.run(main))  # [2, 3]
