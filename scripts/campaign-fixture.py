#!/usr/bin/env python3
"""Writes tests/fixtures/campaigns/: two weeks of a newsletter sender's
feed, made up by this script (no real addresses), for `mxwatch replay`.

- A campaign goes out every day at about 09:00 UTC (a few minutes later
  each day); its bounces arrive within 25 minutes. The list's unknown users
  ("dead-…" addresses) are spread over the providers by the list's shares,
  and the campaign's size varies from day to day.
- On day 10 (2026-03-11) Apple's backend loses its user table for the
  campaign's half hour: iCloud, me.com and mac.com refuse live addresses
  ("live-…") with Apple's wording of 26 April 2021, six times as many as
  iCloud's usual unknown users, while every other provider bounces as usual.
  The dead iCloud addresses of that day cannot be told from the live ones
  then; they are mailed again the next day (a `transient` is a retry) and
  bounce again.
- bounces.jsonl: normalised bounce records (the host that refused is the
  domain's MX). deliveries.jsonl: delivery records, per domain and minute
  (3 % of a campaign's attempts are unknown users; on day 10 the refused live
  addresses are missing from iCloud's deliveries). observations.jsonl: each
  domain's MX, checked once a day.

Run: python3 scripts/campaign-fixture.py   (deterministic: same output every time)
"""
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "campaigns"

# domain, MX host, share of the list's unknown users
LIST = [
    ("gmail.com", "gmail-smtp-in.l.google.com", 0.40),
    ("googlemail.com", "gmail-smtp-in.l.google.com", 0.03),
    ("icloud.com", "mx01.mail.icloud.com", 0.07),
    ("me.com", "mx01.mail.icloud.com", 0.03),
    ("mac.com", "mx01.mail.icloud.com", 0.02),
    ("outlook.com", "outlook-com.olc.protection.outlook.com", 0.12),
    ("hotmail.com", "hotmail-com.olc.protection.outlook.com", 0.08),
    ("yahoo.com", "mta5.am0.yahoodns.net", 0.10),
    ("web.de", "mx-ha03.web.de", 0.05),
    ("corp1.example", "mx.corp1.example", 0.04),
    ("corp2.example", "mx.corp2.example", 0.03),
    ("corp3.example", "mx.corp3.example", 0.03),
]
ICLOUD = {"icloud.com", "me.com", "mac.com"}
SIZES = [20, 60, 200, 45, 30, 125, 20, 90, 150, 70, 38, 200, 28, 105]
INCIDENT_DAY = 9
INCIDENT_X = 6
SENT_PER_UNKNOWN = 32
START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

DEAD = "550 5.1.1 <{who}>: Recipient address rejected: User unknown"
APPLE = "550 5.1.1 <{who}>: user lookup success but no user record found"


def stamp(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def main():
    rng = random.Random(19)
    bounces, deliveries, observations = [], [], []
    retry = []  # dead addresses mailed again the next day
    for day in range(len(SIZES)):
        start = START + timedelta(days=day, minutes=day * 7 % 40)
        for domain, mx, _ in LIST:
            observations.append({
                "domain": domain, "at": stamp(start - timedelta(hours=1)), "outcome": "records",
                "mx": [{"preference": 10, "exchange": mx}], "ttl": 3600,
            })
        at = lambda: start + timedelta(milliseconds=rng.randrange(25 * 60 * 1000))
        sent = {}
        for who, domain, mx in retry:
            bounces.append((at(), who, domain, mx, DEAD))
        retry = []
        for domain, mx, share in LIST:
            usual = SIZES[day] * share
            n = int(usual) + (1 if rng.random() < usual - int(usual) else 0)
            for k in range(n):
                who = f"dead-d{day + 1}-{k}@{domain}"
                bounces.append((at(), who, domain, mx, DEAD))
                if day == INCIDENT_DAY and domain in ICLOUD:
                    retry.append((who, domain, mx))
            refused = 0
            if day == INCIDENT_DAY and domain in ICLOUD:
                refused = round(usual * (INCIDENT_X - 1))
                for k in range(refused):
                    who = f"live-d{day + 1}-{k}@{domain}"
                    bounces.append((at(), who, domain, mx, APPLE))
            sent[domain] = max(0, round(usual * SENT_PER_UNKNOWN) - refused)
        for domain, total in sent.items():
            for minute in range(25):
                lot = total // 25 + (1 if minute < total % 25 else 0)
                if lot:
                    deliveries.append({
                        "delivered": lot, "domain": domain,
                        "at": stamp(start + timedelta(minutes=minute)),
                    })
    bounces.sort()
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "bounces.jsonl", "w") as f:
        for t, who, domain, mx, text in bounces:
            f.write(json.dumps({
                "recipient": who, "at": stamp(t), "status": "5.1.1", "reply_code": 550,
                "diagnostic": text.format(who=who), "remote_mta": mx,
            }) + "\n")
    with open(OUT / "deliveries.jsonl", "w") as f:
        for d in deliveries:
            f.write(json.dumps(d) + "\n")
    with open(OUT / "observations.jsonl", "w") as f:
        for o in observations:
            f.write(json.dumps(o) + "\n")
    print(f"{len(bounces)} bounces, {len(deliveries)} delivery records, "
          f"{len(observations)} observations in {OUT}")


if __name__ == "__main__":
    main()
