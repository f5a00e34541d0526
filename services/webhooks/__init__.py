"""The webhooks service.

Delivers stage, assignment and SLA events to subscribers (CRMs).
"""
