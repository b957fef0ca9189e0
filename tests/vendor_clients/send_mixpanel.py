"""Drive a profiledb server with Mixpanel's Python client (mixpanel), unchanged.

Usage: python send_mixpanel.py BASE_URL PROJECT_TOKEN
Points the client's Consumer at BASE_URL/track, /engage, /groups and /import and sends
people_set (reserved $ properties included), people_set_once, people_increment, people_append,
people_union, people_remove, people_unset, people_delete and group_set; an unknown token must
raise MixpanelException. Prints "ok". tests/server_vendor_clients.rs reads the profiles back.
"""

import sys

from mixpanel import Consumer, Mixpanel, MixpanelException


def client(base, token):
    consumer = Consumer(
        events_url=base + "/track",
        people_url=base + "/engage",
        groups_url=base + "/groups",
        import_url=base + "/import",
        retry_limit=0,
    )
    return Mixpanel(token, consumer=consumer)


def main():
    base, token = sys.argv[1], sys.argv[2]
    mp = client(base, token)
    mp.people_set("mp-user-1", {
        "$email": "Max@Example.com", "$first_name": "Max", "$last_name": "Power",
        "$created": "2026-01-02T03:04:05", "$phone": "+44 20 7946 0000", "plan": "free",
        "temp": True,
    })
    mp.people_set_once("mp-user-1", {"plan": "never", "source": "ads"})
    mp.people_increment("mp-user-1", {"logins": 2})
    mp.people_increment("mp-user-1", {"logins": 3})
    mp.people_append("mp-user-1", {"events": "signup"})
    mp.people_append("mp-user-1", {"events": "upgrade"})
    mp.people_union("mp-user-1", {"tags": ["a", "b", "c"]})
    mp.people_union("mp-user-1", {"tags": ["c", "d"]})
    mp.people_remove("mp-user-1", {"tags": "b"})
    mp.people_unset("mp-user-1", ["temp"])
    mp.group_set("company", "mp-co-1", {"name": "MixCo", "tier": 2})
    mp.people_set("mp-gone", {"plan": "x"})
    mp.people_delete("mp-gone")

    bad = client(base, "not-a-token")
    try:
        bad.people_set("mp-user-2", {"plan": "x"})
    except MixpanelException:
        pass
    else:
        sys.exit("an unknown token was accepted")
    print("ok")


if __name__ == "__main__":
    main()
