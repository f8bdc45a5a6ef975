"""Your own event schemas, next to the built-in trading ones."""

import anyio
from pydantic import BaseModel, ConfigDict, Field

from wsbridge import Broadcaster, DeliveryKind, EventValidationError, Registry, trading

mine = Registry()


@mine.event("chat:message", description="A message in the operators' chat room.")
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    author: str = Field(min_length=1)
    text: str = Field(min_length=1, max_length=2000)


class DeskStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    open_orders: int = Field(ge=0)
    exposure_pct: float


# One schema for every desk: desk:status:equities, desk:status:fx, ...
mine.register("desk:status:*", DeskStatus, kind=DeliveryKind.STATE)

registry = trading.registry | mine  # a new registry; both inputs stay as they are


async def main() -> None:
    broadcaster = Broadcaster("memory://", registry=registry, validation="drop")
    async with broadcaster, broadcaster.subscriber() as client:
        await client.subscribe(["chat:message", "desk:status:*"])

        await broadcaster.publish("chat:message", ChatMessage(author="ann", text="hi"))
        await broadcaster.publish("desk:status:fx", {"open_orders": 3, "exposure_pct": 12.5})
        try:
            await broadcaster.publish("desk:status:fx", {"open_orders": -1, "exposure_pct": 1})
        except EventValidationError as exc:
            print("refused:", exc.channel, exc.fields)

        frames = []
        with anyio.fail_after(1):
            while len(frames) < 2:  # get() returns the frames pending now, at least one
                frames += await client.get()
        for frame in frames:
            print(frame.text)

    print(registry.channels()[-1], registry.patterns(), registry.kind_for("desk:status:fx"))


anyio.run(main)
