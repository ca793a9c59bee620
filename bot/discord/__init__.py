"""The Discord adapter: discord.py client, slash commands, replies."""
