"""How events reach a `FlowApp` and actions leave it: HTTP webhook, WebSocket, control API, docs."""
