"""The agent: Slipway's sample Python service, an HTTPS API that requires client certificates."""
