"""The node-to-manager connection on 2377 that both halves of a node speak: framing, the request/response
calls and who may make them (`channel`), and the limits of the log messages workers publish (`logs`).
The manager serves the calls (`manager.dispatcher`, `manager.caserver`, `manager.logbroker`); the agent and
the API's log forwarding call them."""
