"""Reports people read: of one run, and of a feed over a period, in every rendering.

    run.py       RunReport: a run, replay or baseline (or its failure) and where the feed stands
    period.py    FeedReport: a feed over N days, from the store (daily counts, batches, codes)
    text.py      the commands' text output of a run
    mail.py      the notice e-mail (plain text and HTML)
    notify.py    sending notices: SMTP and webhooks, with timeouts and a retry
    html.py      the HTML report page; svg.py draws its charts
    log.py       the run in the log; after.py does everything that follows a run
    settings.py  ``[notify]`` in the configuration
    reads.py     what the reports read from the store

Nothing here is imported by the package itself, so the configuration can use ``settings``
without importing the job.
"""
