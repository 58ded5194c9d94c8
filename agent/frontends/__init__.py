"""Front ends beyond the terminal: the Slack bot and the HTTP API."""
