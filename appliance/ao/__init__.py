"""AO's wire objects: ANS-104 data items and their tags (no node state, no I/O)."""
