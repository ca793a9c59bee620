"""Slack's limits and Phobos's defaults under them: SDK-free, so the settings section imports without slack_sdk."""

from __future__ import annotations

SLACK_TEXT_LIMIT = 3900  # chat.postMessage accepts 4,000 characters of text; leave room for fences
UPDATE_INTERVAL_S = 1.0  # the fastest one answer is edited; the workspace's edit budget may slow it
EDITS_PER_MIN = 45  # chat.update + chat.delete per workspace (Tier 3 allows about 50; leave room)
APPENDS_PER_MIN = 90  # chat.appendStream per workspace (Tier 4 allows 100+; leave room)
DEFAULT_FILE_HOSTS = ("files.slack.com",)  # the only hosts that ever see the bot token
