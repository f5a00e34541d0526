"""The qualification service.

Scores leads with the agreed model, assesses BANT and owns the lifecycle stage.
"""
