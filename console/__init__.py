"""console: the operators' web console on `/exploitation/` (French), over `AdminService`."""
