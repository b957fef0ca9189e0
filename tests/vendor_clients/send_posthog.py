"""Drive a profiledb server with PostHog's Python client (posthog), unchanged.

Usage: python send_posthog.py HOST PROJECT_API_KEY
Sends, queued with gzip and flushed: an anonymous event with $set_once, capture of $identify
with $anon_distinct_id and $set, set, set_once, an event with $unset, alias and group_identify;
then an unknown key, which must reach on_error as a 401. Prints "ok" on success.
tests/server_vendor_clients.rs reads the profiles back.
"""

import sys

from posthog import Posthog


def main():
    host, key = sys.argv[1], sys.argv[2]
    errors = []

    def on_error(error, batch):
        errors.append(error)

    ph = Posthog(key, host=host, gzip=True, on_error=on_error, max_retries=1, flush_at=100)
    # An anonymous visitor (posthog-js marks its events $is_identified: false).
    ph.capture("page viewed", distinct_id="ph-anon-1",
               properties={"$is_identified": False, "$set_once": {"first_campaign": "spring"}})
    # posthog-js's identify(): $identify with the anonymous id and $set.
    ph.capture("$identify", distinct_id="ph-user-1",
               properties={"$anon_distinct_id": "ph-anon-1",
                           "$set": {"email": "Pip@Example.com", "first_name": "Pip",
                                    "plan": "free", "temp": 1}})
    ph.set(distinct_id="ph-user-1", properties={"plan": "team"})
    ph.set_once(distinct_id="ph-user-1", properties={"plan": "never", "signup_source": "ads"})
    ph.capture("cleaned up", distinct_id="ph-user-1", properties={"$unset": ["temp"]})
    ph.alias(previous_id="ph-anon-2", distinct_id="ph-user-1")
    ph.group_identify("company", "ph-co-1", {"name": "PostCo", "employees": 11})
    ph.flush()
    ph.shutdown()
    if errors:
        sys.exit("errors from the client: %r" % (errors,))

    bad_errors = []
    bad = Posthog("not-a-key", host=host, max_retries=0,
                  on_error=lambda e, batch: bad_errors.append(e))
    bad.set(distinct_id="ph-user-2", properties={"plan": "x"})
    bad.flush()
    bad.shutdown()
    if not bad_errors or getattr(bad_errors[0], "status", None) != 401:
        sys.exit("an unknown key was not refused with 401: %r" % (bad_errors,))
    print("ok")


if __name__ == "__main__":
    main()
