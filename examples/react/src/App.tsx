// The reference dashboard's component, unchanged: it reads lastMessage and connected.
import { useEffect, useState } from "react";
import { useChannel, useWebSocket } from "./useWebSocket";

export function App() {
  const { lastMessage, connected } = useWebSocket();
  const [trades, setTrades] = useState<string[]>([]);
  const portfolio = useChannel("portfolio:update");

  useEffect(() => {
    if (lastMessage?.channel === "trade:executed") {
      const trade = lastMessage.data;
      setTrades((seen) => [`${trade.side} ${trade.quantity} ${trade.symbol}`, ...seen].slice(0, 20));
    }
  }, [lastMessage]);

  return (
    <main>
      <div data-testid="status">{connected ? "Live" : "Reconnecting..."}</div>
      <div data-testid="equity">{portfolio === undefined ? "-" : portfolio.total_equity.toFixed(2)}</div>
      <ul data-testid="trades">
        {trades.map((trade, i) => (
          <li key={i}>{trade}</li>
        ))}
      </ul>
    </main>
  );
}
