"""What every command service shares: store configuration, message metadata, relay."""
