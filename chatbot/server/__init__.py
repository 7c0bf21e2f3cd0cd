"""The websockets server: shopper and agent sockets, health, metrics, static files."""
