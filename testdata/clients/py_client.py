"""One GET with Python's http.client, for clients_test.go.

Usage: python3 py_client.py <url> <timeout-seconds, 0 for none>
Prints one JSON line: {status, body, error}. http.client skips only
100 Continue; any other 1xx is returned as the final response.
"""
import http.client
import json
import sys
import urllib.parse

url, timeout = sys.argv[1], float(sys.argv[2])
u = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout or None)
try:
    conn.request("GET", u.path)
    res = conn.getresponse()
    body = res.read()
    print(json.dumps({"status": res.status, "body": body.decode("utf-8", "replace")}))
except Exception as e:  # the outcome is the record, whatever it is
    print(json.dumps({"status": 0, "error": repr(e)}))
finally:
    conn.close()
