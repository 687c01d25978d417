"""Storage of mailboxes and files."""
