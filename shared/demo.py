"""`handoff demo`: fill a running handoff with a small, believable pipeline to look at.

It talks to handoff as any client does, over its API with a token, so it works the same
against `handoff dev` and against the services `make up` runs. What it sends is made up
but shaped like real traffic: companies with several people each (so leads share
accounts), some people on free mail, marketing leads arriving as an import, a few leads a
salesperson entered, and what leads then did (page views, downloads, webinars, email
clicks, meetings), including anonymous visitors who identify themselves later with a
form. The same `--seed` makes the same people: run again, the import finds them
unchanged and only new activities are added.
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from faker import Faker

from shared.problems import read_problem

# People's locales and the country each stands for.
_LOCALES = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR", "es_ES": "ES"}
_FREE_MAIL = ("gmail.com", "outlook.com", "yahoo.com")
_TITLES = (
    ("Marketing Manager", "manager"),
    ("Head of Growth", "director"),
    ("VP Marketing", "vp"),
    ("Sales Director", "director"),
    ("Account Executive", "mid"),
    ("CTO", "c_level"),
    ("Chief Revenue Officer", "c_level"),
    ("Data Analyst", "mid"),
    ("Software Engineer", "mid"),
    ("Operations Lead", "senior"),
    ("Founder", "owner"),
    ("Marketing Intern", "entry"),
)
_INDUSTRIES = ("software", "manufacturing", "financial services", "healthcare", "retail")
_SIZES = ("1-10", "11-50", "51-200", "201-500", "501-1000", "1000+")
_CHANNELS = ("web_form", "webinar", "content", "paid", "event", "email", "organic", "social")
_CAMPAIGNS = ("Q4 webinar series", "pricing guide", "spring launch", "partner summit")
# What leads do next, and how often (weights).
_ACTIVITIES = {
    "page_view": 30,
    "email_open": 20,
    "email_click": 12,
    "content_download": 10,
    "pricing_page_view": 8,
    "webinar_registered": 6,
    "webinar_attended": 4,
    "form_submit": 4,
    "demo_request": 2,
    "meeting_booked": 2,
    "email_unsubscribe": 1,
}
_PAGES = ("/", "/product", "/blog/lead-scoring", "/customers", "/docs", "/pricing")


@dataclass
class DemoPlan:
    """What the demo sends: leads (marketing and sales), activities, visitors' histories."""

    marketing: list[dict[str, Any]] = field(default_factory=list)
    sales: list[dict[str, Any]] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DemoSummary:
    imported: dict[str, Any]
    sales: Counter[str]
    activities: Counter[str]
    companies: int
    sample_lead: str | None


class DemoError(RuntimeError):
    """The running handoff refused something (its problem's detail) or could not be reached."""


def plan(leads: int, *, seed: int, now: datetime | None = None) -> DemoPlan:
    """`leads` people at about `leads / 4` companies, one in ten a salesperson's, and what
    they did over the last 30 days; the same `seed` gives the same people."""
    rng = random.Random(seed)
    fakers = {locale: Faker(locale) for locale in _LOCALES}
    for i, fake in enumerate(fakers.values()):
        fake.seed_instance(seed * 100 + i)
    now = now or datetime.now(UTC)
    companies = [_company(fakers, rng) for _ in range(max(1, leads // 4))]
    out = DemoPlan()
    seen: set[str] = set()
    for n in range(leads):
        company = companies[n % len(companies)]
        fake = fakers[company["locale"]]
        first, last = fake.first_name(), fake.last_name()
        local = f"{_mailbox(first)}.{_mailbox(last)}"
        domain = rng.choice(_FREE_MAIL) if rng.random() < 0.1 else company["domain"]
        email = f"{local}@{domain}" if f"{local}@{domain}" not in seen else f"{local}{n}@{domain}"
        seen.add(email)
        title, seniority = rng.choice(_TITLES)
        lead: dict[str, Any] = {
            "email": email,
            "first_name": first,
            "last_name": last,
            "company": company["name"],
            "company_domain": company["domain"],
            "job_title": title,
            "seniority": seniority,
            "company_size": company["size"],
            "industry": company["industry"],
            "country": _LOCALES[company["locale"]],
            "marketing_consent": rng.random() < 0.8,
        }
        if n % 10 == 9:  # a salesperson met them: entered by hand
            out.sales.append({**lead, "source": "sales", "channel": "outbound"})
        else:
            channel = rng.choice(_CHANNELS)
            out.marketing.append(
                {**lead, "channel": channel, "campaign": rng.choice(_CAMPAIGNS)}
                | ({"utm_source": "linkedin", "utm_medium": "cpc"} if channel == "paid" else {})
            )
        out.activities += _history(email, rng, now)
    out.activities += _visitors(out.marketing, rng, now)
    return out


def run(
    base_url: str,
    token: str,
    demo: DemoPlan,
    *,
    progress: Callable[[str, int], Callable[[int], None]],
) -> DemoSummary:
    """Send `demo` to the handoff at `base_url`; `progress(what, total)` returns a function
    told how many more are done."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=60) as client:
        _check(client)
        advance = progress("importing marketing leads", len(demo.marketing))
        body = b"\n".join(orjson.dumps(lead) for lead in demo.marketing)
        imported = _ok(
            client.post(
                "/v1/leads/import",
                content=body,
                headers={"Content-Type": "application/x-ndjson"},
            )
        ).json()
        advance(len(demo.marketing))
        sales: Counter[str] = Counter()
        sample = None
        advance = progress("capturing sales' leads", len(demo.sales))
        for lead in demo.sales:
            answer = _ok(client.post("/v1/leads", json=lead)).json()
            sales["created" if answer.get("created") else "updated"] += 1
            sample = sample or answer.get("lead_id")
            advance(1)
        activities: Counter[str] = Counter()
        advance = progress("recording activities", len(demo.activities))
        for activity in demo.activities:
            _ok(client.post("/v1/activities", json=activity))
            activities[activity["activity_type"]] += 1
            advance(1)
    companies = len({lead["company_domain"] for lead in demo.marketing + demo.sales})
    return DemoSummary(imported, sales, activities, companies, sample)


def _company(fakers: dict[str, Faker], rng: random.Random) -> dict[str, Any]:
    locale = rng.choice(list(_LOCALES))
    name = fakers[locale].company()
    words = [w for w in _ascii(name).replace("-", " ").split() if w.isalnum()][:2]
    tld = {"US": "com", "GB": "co.uk", "DE": "de", "FR": "fr", "ES": "es"}[_LOCALES[locale]]
    return {
        "locale": locale,
        "name": name,
        "domain": f"{'-'.join(words) or 'company'}{rng.randint(1, 999)}.{tld}",
        "size": rng.choice(_SIZES),
        "industry": rng.choice(_INDUSTRIES),
    }


def _history(email: str, rng: random.Random, now: datetime) -> list[dict[str, Any]]:
    """What one lead did: mostly a little, a few a lot (the ones sales should call)."""
    count = rng.choice((0, 0, 1, 1, 2, 3, 5, 8))
    kinds, weights = zip(*_ACTIVITIES.items(), strict=True)
    out = []
    for kind in rng.choices(kinds, weights, k=count):
        out.append(
            {
                "activity_type": kind,
                "email": email,
                "occurred_at": _ago(rng, now),
                "properties": _properties(kind, rng),
            }
        )
    return out


def _visitors(leads: list[dict[str, Any]], rng: random.Random, now: datetime) -> Iterator[Any]:
    """Anonymous visitors browsing, then filling in a form: their history joins the lead."""
    for lead in rng.sample(leads, k=min(len(leads), max(1, len(leads) // 20))):
        visitor = f"v-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
        for page in rng.sample(_PAGES, k=3):
            kind = "pricing_page_view" if page == "/pricing" else "page_view"
            yield {
                "activity_type": kind,
                "visitor_id": visitor,
                "occurred_at": _ago(rng, now, days=10),
                "properties": {"url": page},
            }
        yield {
            "activity_type": "form_submit",
            "email": lead["email"],
            "visitor_id": visitor,
            "occurred_at": now.isoformat(),
            "properties": {"form": "contact sales"},
        }


def _properties(kind: str, rng: random.Random) -> dict[str, Any]:
    if kind in ("page_view", "pricing_page_view"):
        return {"url": "/pricing" if kind == "pricing_page_view" else rng.choice(_PAGES)}
    if kind in ("email_open", "email_click", "email_unsubscribe"):
        return {"campaign": rng.choice(_CAMPAIGNS)}
    if kind == "content_download":
        return {"asset": rng.choice(("pricing guide", "ROI calculator", "case study"))}
    return {}


def _ago(rng: random.Random, now: datetime, *, days: int = 30) -> str:
    return (now - timedelta(seconds=rng.randint(60, days * 86_400))).isoformat()


def _ascii(text: str) -> str:
    """A name as it goes into an address: letters without accents, lower case."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in plain.lower() if c.isalnum() or c in " -").strip()


def _mailbox(name: str) -> str:
    """A name as part of an address: "Julio César" -> "julio-cesar"."""
    return "-".join(_ascii(name).replace("-", " ").split())


def _check(client: httpx.Client) -> None:
    try:
        client.get("/healthz").raise_for_status()
    except httpx.HTTPError as exc:
        raise DemoError(
            f"no handoff answers at {client.base_url} ({exc}): start one (make dev) or pass --url"
        ) from None


def _ok(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    said = read_problem(response.text) or response.reason_phrase
    request = response.request
    raise DemoError(f"{request.method} {request.url.path}: {response.status_code} {said}")
