"""The fields of a lead's profile: what intake stores, and what settings may name."""

from __future__ import annotations

PROFILE_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "company",
    "company_domain",
    "job_title",
    "department",
    "seniority",
    "company_size",
    "industry",
    "country",
    "marketing_consent",
    "channel",
    "campaign",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
)

# The fields a capture may change: the profile's, and its custom attributes.
LEAD_FIELDS = frozenset({*PROFILE_FIELDS, "custom"})

# What a marketing sync may not overwrite once sales entered it, by default: everything
# but the email (the lead's identity), consent and attribution, and custom attributes.
MARKETING_KEEPS = frozenset(
    {"email", "marketing_consent", "channel", "campaign", "custom"}
    | {name for name in PROFILE_FIELDS if name.startswith("utm_")}
)
SALES_OWNED_DEFAULT = LEAD_FIELDS - MARKETING_KEEPS
