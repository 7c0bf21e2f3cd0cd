"""Conversations: tables, the ownership state machine and the conversation service."""
