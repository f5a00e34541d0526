"""The metrics service.

Funnel read model, shared KPIs, lead timelines and the dashboard.
"""
