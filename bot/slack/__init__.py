"""The Slack adapter: slack-bolt app, file downloads, replies."""
