"""The participant kit: keys, send, receive, watch."""
