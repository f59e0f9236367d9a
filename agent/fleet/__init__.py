"""edgebench.agent.fleet: the fleet side of the agent: MQTT protocol, daemon, outbox, model cache, collector client.

Importing this package stays cheap (standard library only); paho-mqtt is imported by the daemon when it runs.
"""
