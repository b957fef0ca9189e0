"""Drive a profiledb server with RudderStack's Python client (rudder-sdk-python), unchanged.

Usage: python send_rudderstack.py DATA_PLANE_URL WRITE_KEY
Sends identify (traits land in context.traits, as rudder-sdk-python 2.x sends them), group,
alias and track, in sync mode and queued with gzip (the client's default), checks that an unknown
write key is refused, and prints "ok". tests/server_vendor_clients.rs reads the profiles back.
"""

import sys

from rudderstack.analytics import Client
from rudderstack.analytics.request import APIError


def main():
    host, write_key = sys.argv[1], sys.argv[2]
    errors = []

    def on_error(error, items):
        errors.append((error, items))

    client = Client(write_key, host=host, sync_mode=True, on_error=on_error, max_retries=1)
    client.identify(
        "rs-user-1",
        {"email": "Robin@Example.com", "firstName": "Robin", "lastName": "Stone", "plan": "team",
         "seats": 5},
        anonymous_id="rs-anon-1",
        message_id="rs-m-1",
    )
    # Traits passed in `context` too: the ones in the call win name by name.
    client.identify(
        "rs-user-1",
        {"plan": "enterprise"},
        context={"ip": "10.0.0.1"},
        message_id="rs-m-2",
    )
    # A retry of the same messageId changes nothing.
    client.identify("rs-user-1", {"plan": "free"}, message_id="rs-m-2")
    client.group("rs-user-1", "rs-co-1", {"name": "RudderCo", "size": 40})
    client.alias("rs-prev-1", "rs-user-1")
    client.track("rs-user-1", "Signed Up", {"source": "test"}, anonymous_id="rs-anon-2")

    queued = Client(write_key, host=host, on_error=on_error, max_retries=1)
    for i in range(20):
        queued.identify("rs-bulk-%d" % i, {"n": i, "email": "rsbulk%d@example.com" % i})
    queued.flush()
    queued.join()
    if errors:
        sys.exit("errors from the client: %r" % (errors,))

    bad = Client("not-a-key", host=host, sync_mode=True, max_retries=0)
    try:
        bad.identify("rs-user-2", {"plan": "x"})
    except APIError as e:
        if e.status != 401 or e.code != "unauthorized":
            sys.exit("unexpected error for an unknown key: %s %s %s" % (e.status, e.code, e.message))
    else:
        sys.exit("an unknown key was accepted")
    print("ok")


if __name__ == "__main__":
    main()
