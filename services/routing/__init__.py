"""The routing service.

Assigns an owner to every handed-off lead and runs the SLA clocks.
"""
