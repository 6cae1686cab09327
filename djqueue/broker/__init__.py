"""The message table: every statement that moves a message, per database vendor."""
