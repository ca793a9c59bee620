"""Chat adapters: console, Slack, Discord. They translate platform events into jobs and reply events
into platform messages, and never run a model."""
