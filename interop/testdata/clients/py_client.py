"""One GET with Python's standard library, for clients_test.go.

Usage: python3 py_client.py http.client|urllib <url> <timeout-seconds, 0 for none>
Prints one JSON line: {status, body, error}. http.client skips only
100 Continue; any other 1xx is returned as the final response. It sends no
User-Agent; urllib, built on it, sends "Python-urllib/3.x".
"""
import http.client
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

mode, url, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
try:
    if mode == "urllib":
        with urllib.request.urlopen(url, timeout=timeout or None) as res:
            status, body = res.status, res.read()
    else:
        u = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout or None)
        try:
            conn.request("GET", u.path)
            res = conn.getresponse()
            status, body = res.status, res.read()
        finally:
            conn.close()
    print(json.dumps({"status": status, "body": body.decode("utf-8", "replace")}))
except urllib.error.HTTPError as e:  # urllib raises on any status but 2xx
    print(json.dumps({"status": e.code, "body": e.read().decode("utf-8", "replace"), "error": "HTTPError %d" % e.code}))
except Exception as e:  # the outcome is the record, whatever it is
    print(json.dumps({"status": 0, "error": repr(e)}))
