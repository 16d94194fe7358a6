"""Expiration records: the last-sent record, a new expiry and purge date, sent once."""

from __future__ import annotations

import datetime as dt

from lxml import etree

from deltasync.canonical import Recipe
from deltasync.config import DepartureConfig
from deltasync.delta.departure import expiration_record, needs_expiration
from deltasync.userxml import parse_alma_date, strip_formatting

LAST_SENT = Recipe().payload(
    strip_formatting(
        etree.fromstring(b"""<user>
  <primary_id>S1</primary_id><user_group desc="Graduate">GRAD</user_group>
  <expiry_date>2031-06-30Z</expiry_date><status desc="Active">ACTIVE</status>
  <contact_info><emails><email preferred="true"><email_address>s1@example.edu</email_address>
  </email></emails></contact_info></user>""")
    )
)


def test_expiration_keeps_the_whole_record_and_sets_dates() -> None:
    user = expiration_record(LAST_SENT, DepartureConfig(purge_after_days=365), dt.date(2027, 1, 4))
    assert user.findtext("expiry_date") == "2027-01-04Z"
    assert user.findtext("purge_date") == "2028-01-04Z"
    assert user.findtext("contact_info/emails/email/email_address") == "s1@example.edu"
    assert user.findtext("user_group") == "GRAD"
    assert user.find("user_group").get("desc") == "Graduate"


def test_status_and_group_overrides() -> None:
    policy = DepartureConfig(status="INACTIVE", user_group="EXPIRED", purge_after_days=0)
    user = expiration_record(LAST_SENT, policy, dt.date(2027, 1, 4))
    assert user.findtext("status") == "INACTIVE"
    assert user.find("status").get("desc") is None  # the old description would be wrong
    assert user.findtext("user_group") == "EXPIRED"
    assert user.findtext("purge_date") == "2027-01-04Z"


def test_policy_date_in_the_feeds_time_zone() -> None:
    late_evening_chicago = dt.datetime(2027, 1, 5, 3, 30, tzinfo=dt.UTC)
    from zoneinfo import ZoneInfo

    chicago = ZoneInfo("America/Chicago")
    assert DepartureConfig().policy_date(late_evening_chicago, chicago) == dt.date(2027, 1, 4)
    assert DepartureConfig(expiry_offset_days=7).policy_date(
        late_evening_chicago, chicago
    ) == dt.date(2027, 1, 11)


def test_already_expired_patrons_need_no_record() -> None:
    today = dt.date(2027, 1, 4)
    assert needs_expiration(dt.date(2027, 1, 5), today)
    assert not needs_expiration(dt.date(2027, 1, 4), today)
    assert not needs_expiration(dt.date(2026, 5, 1), today)
    assert needs_expiration(None, today)


def test_alma_dates() -> None:
    assert parse_alma_date("2027-06-30Z") == dt.date(2027, 6, 30)
    assert parse_alma_date("2027-06-30") == dt.date(2027, 6, 30)
    assert parse_alma_date(" 2027-06-30-05:00 ") == dt.date(2027, 6, 30)
    assert parse_alma_date("2027-02-30") is None
    assert parse_alma_date("30/06/2027") is None
    assert parse_alma_date(None) is None
