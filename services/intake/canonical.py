"""The canonical lead and activity: one definition, whatever system they came from."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol, Self

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.intake import domains, normalize
from shared.lead_fields import PROFILE_FIELDS

LeadSource = Literal["marketing", "sales"]
Channel = Literal[
    "web_form",
    "webinar",
    "event",
    "content",
    "paid",
    "email",
    "organic",
    "social",
    "referral",
    "partner",
    "cold_call",
    "outbound",
    "import",
    "chat",
    "other",
]
ActivityType = Literal[
    "page_view",
    "pricing_page_view",
    "form_submit",
    "content_download",
    "webinar_registered",
    "webinar_attended",
    "event_attended",
    "email_open",
    "email_click",
    "email_unsubscribe",
    "email_bounce",
    "meeting_booked",
    "call_logged",
    "demo_request",
    "trial_signup",
    "chat_started",
    "ad_click",
]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def _scalar(value: Any) -> Any:
    # One error naming the attribute: left to the union, an object or a list failed each of
    # its members (`custom.x.int`, `custom.x.float`, ...), naming pydantic's types as fields.
    if isinstance(value, dict | list):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise ValueError(f"must be a string, a number, true, false or null, not {kind}")
    return value


Scalar = Annotated[str | int | float | bool | None, BeforeValidator(_scalar)]


def _bounded(value: Scalar) -> Scalar:
    if isinstance(value, str) and len(value) > 1000:
        raise ValueError("at most 1000 characters")
    return value


# provider -> the person's id there. Never empty: an empty id would be one person's key
# for everyone whose platform sent it empty. A provider is named in lower case ("HubSpot"
# is "hubspot"), so that one person is one lead whichever way a file heads the column.
ExternalIds = dict[
    Annotated[
        str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=40)
    ],
    Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)],
]

# (checked after the type: an error names the attribute, `custom.<key>`)
CustomValue = Annotated[Scalar, AfterValidator(_bounded)]

MAX_CUSTOM = 50
# Never on the bus: direct identifiers, and free-form custom attributes (they may hold any).
PII_FIELDS = frozenset({"email", "first_name", "last_name", "phone", "visitor_id", "custom"})


# A headcount as platforms and files give it: a whole number, its digits in groups of three
# set apart by one separator throughout ("1,000", "1.000" as European exports write it,
# "1 000" also with a no-break or narrow no-break space), or plain ("250", "250.0" as a
# spreadsheet may write it: after a dot or comma, three digits are a group, not a fraction);
# a band "25-50" / "51 to 200", or an open one "1000+" (HubSpot's `numemployees` is such a
# pick-list).
_GROUPED = re.compile(r"\d{1,3}(?P<sep>[,. \u00a0\u202f])\d{3}(?:(?P=sep)\d{3})*")
_PLAIN = re.compile(r"(\d+)(?:[.,]0+)?")
_BAND = re.compile(r"(.+?)\s*(?:-|\u2013|to)\s*(.+)", re.IGNORECASE)
_HEADCOUNT_FORMS = (
    "a whole number of employees (a valid integer: 250, 1,000, 1.000, 1 000) "
    "or a band (51-200, 1000+)"
)


def headcount(text: str) -> int:
    """A company size given as text, as a number: a band is stored as its lower bound
    (`company_size` is one number, and the band's floor is what the company is known to
    have). ValueError saying why for text that is none of these."""
    given = text.strip()
    if given.endswith("+"):
        return _count(given[:-1].rstrip(), text)
    if (band := _BAND.fullmatch(given)) is None:
        return _count(given, text)
    low, high = _count(band[1], text), _count(band[2], text)
    if high < low:
        raise ValueError(f"the band {given!r} ends below where it starts")
    return low


def _count(number: str, text: str) -> int:
    if _GROUPED.fullmatch(number):
        return int(re.sub(r"\D", "", number))
    if plain := _PLAIN.fullmatch(number):
        return int(plain[1])
    raise ValueError(f"must be {_HEADCOUNT_FORMS}, not {text.strip()!r}")


class LeadIn(BaseModel):
    """A lead as any source describes it; fields not given are left as they are."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: str | None = Field(default=None, max_length=254, examples=["ana@acme.com"])
    first_name: Text | None = None
    last_name: Text | None = None
    company: Text | None = None
    company_domain: str | None = Field(default=None, max_length=253)
    job_title: Text | None = None
    department: Text | None = None
    seniority: (
        Literal["entry", "mid", "senior", "manager", "director", "vp", "c_level", "owner"] | None
    ) = None
    company_size: int | None = Field(default=None, ge=1, le=10_000_000)
    industry: Text | None = None
    country: str | None = Field(default=None, description="ISO 3166 code or a country's name")
    # after `country`: a national number is read in the lead's country (see `_phone`)
    phone: str | None = Field(default=None, max_length=40, examples=["+49 30 1234567"])
    marketing_consent: bool | None = None
    source: LeadSource = "marketing"
    channel: Channel | None = None
    campaign: Text | None = None
    utm_source: Text | None = None
    utm_medium: Text | None = None
    utm_campaign: Text | None = None
    utm_term: Text | None = None
    utm_content: Text | None = None
    external_ids: ExternalIds = Field(
        default_factory=dict, max_length=10, examples=[{"hubspot": "1234"}]
    )
    custom: dict[Annotated[str, StringConstraints(max_length=64)], CustomValue] = Field(
        default_factory=dict, max_length=MAX_CUSTOM
    )
    visitor_id: str | None = Field(default=None, max_length=100)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else normalize.normalize_email(value)

    @field_validator("company_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        return None if value is None else normalize.normalize_domain(value)

    @field_validator("seniority", mode="before")
    @classmethod
    def _seniority(cls, value: Any) -> Any:
        return normalize.choice(value, normalize.SENIORITY_ALIASES)

    @field_validator("channel", mode="before")
    @classmethod
    def _channel(cls, value: Any) -> Any:
        return normalize.choice(value)

    @field_validator("company_size", mode="before")
    @classmethod
    def _company_size(cls, value: Any) -> Any:
        # A count of employees, read here: pydantic's own reading of an int takes true for
        # 1, and "1.000" for 1 (it drops a fraction of zeros).
        if isinstance(value, bool):
            raise ValueError(f"must be {_HEADCOUNT_FORMS}, not {str(value).lower()}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"must be a whole number of employees, not {value}")
            return int(value)
        return headcount(value) if isinstance(value, str) else value

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        return None if value is None else normalize.normalize_country(value)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None, info: ValidationInfo) -> str | None:
        # `country` is validated first (declared before): None if absent or invalid
        if value is None:
            return None
        try:
            return normalize.normalize_phone(value, info.data.get("country"))
        except normalize.NeedsCountry:
            return value.strip()  # a national number: see `national_phone`

    @property
    def national_phone(self) -> str | None:
        """A national number that came without a country (E.164 starts with "+"): it is
        read in the lead's stored country when captured, and is no profile field till then."""
        phone = self.phone
        return phone if phone is not None and not phone.startswith("+") else None

    def profile(self) -> dict[str, Any]:
        """The profile fields this input sets (None and unset fields left out)."""
        fields = {f: v for f in PROFILE_FIELDS if (v := getattr(self, f)) is not None}
        if "phone" in fields and self.national_phone is not None:
            del fields["phone"]  # (read at capture)
        if self.custom:
            fields["custom"] = dict(self.custom)
        return fields

    def account_domain(self) -> str | None:
        """The account domain of a lead made from this input alone."""
        return account_domain_of(self.email, self.company_domain)

    def captured_fields(self) -> bytes:
        """`lead.captured`'s fields for a lead made from this input (see `captured_fields`)."""
        return captured_fields(self)


class LeadCapture(LeadIn):
    """`POST /v1/leads`: a lead with its email (the identity key)."""

    email: str = Field(max_length=254, examples=["ana@acme.com"])  # type: ignore[assignment]


def _lead_id(value: str) -> str:
    """A lead's id as handoff writes it (any spelling of the UUID is read)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError("must be a lead's id (a UUID)") from None


class ActivityIn(BaseModel):
    """Something a lead (or a not-yet-identified visitor) did."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    activity_type: ActivityType
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    lead_id: Annotated[str, AfterValidator(_lead_id)] | None = None
    email: str | None = Field(default=None, max_length=254)
    external_ids: ExternalIds = Field(default_factory=dict, max_length=10)
    visitor_id: str | None = Field(default=None, max_length=100)
    properties: dict[Annotated[str, StringConstraints(max_length=64)], Scalar] = Field(
        default_factory=dict, max_length=50
    )

    @field_validator("activity_type", mode="before")
    @classmethod
    def _activity_type(cls, value: Any) -> Any:
        return normalize.choice(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else normalize.normalize_email(value)

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _someone(self) -> Self:
        if not (self.lead_id or self.email or self.external_ids or self.visitor_id):
            raise ValueError("say who: lead_id, email, external_ids or visitor_id")
        return self


# What a new lead takes from its input alone, computed where the input is validated: an
# import's rows in its validating process, so that the process writing them does not.


def account_domain_of(email: str | None, company_domain: str | None) -> str | None:
    """The domain a lead's account is keyed by (None: free or disposable mail only)."""
    return domains.account_domain(
        email_domain=normalize.email_domain(email) if email else None,
        company_domain=company_domain,
    )


class NewLeadInput(Protocol):
    """What a lead made from an input alone takes from it (a `LeadIn`, an import's row)."""

    @property
    def email(self) -> str | None: ...
    @property
    def source(self) -> LeadSource: ...
    @property
    def channel(self) -> str | None: ...
    @property
    def campaign(self) -> str | None: ...
    @property
    def external_ids(self) -> dict[str, str]: ...
    def profile(self) -> dict[str, Any]: ...


def captured_fields(lead: NewLeadInput, profile: dict[str, Any] | None = None) -> bytes:
    """`lead.captured` (`LeadCaptured`) for a lead made from `lead`, as a JSON object without
    its `lead_id` and `account_id`, which only the capture knows
    (`services.intake.leads.captured_event`). `profile`: `lead.profile()`, if made already."""
    assert lead.email is not None  # (a lead is only made from an input with an email)
    if profile is None:
        profile = lead.profile()
    domain = normalize.email_domain(lead.email)
    return orjson.dumps(
        {
            "source": lead.source,
            "channel": lead.channel,
            "campaign": lead.campaign,
            "email_domain": domain,
            "email_kind": domains.email_kind(domain),
            "profile": {k: v for k, v in profile.items() if k not in PII_FIELDS},
            "external_ids": lead.external_ids,
        }
    )
