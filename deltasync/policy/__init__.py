"""Expiry policy: what a date change means, computed dates, renewals and rolling refresh.

``settings`` is read by the configuration; ``rules`` sets a record's dates before it is
hashed; ``resend`` decides after the pass which present patrons go out again although
unchanged (their expiry comes within the renewal window, or their refresh share is today's).
"""
