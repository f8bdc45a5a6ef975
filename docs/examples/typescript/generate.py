"""Write the TypeScript declarations of the trading events for the front end."""

from pathlib import Path

from wsbridge.export import typescript
from wsbridge.trading import registry

Path("wsbridge-events.ts").write_text(typescript(registry), encoding="utf-8")
