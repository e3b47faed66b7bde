"""aifactory-admin: the operators' tool for a deployed Factory (--stack) or the local one."""
