"""The intake service.

Captures leads and activities from APIs, imports and marketing platforms; owns lead
identity and accounts.
"""
