"""PUTs a body of unknown length to a presigned URL with `requests` and a generator (HTTP
chunked transfer, no Content-Length), as applications that stream do: the generator yields
what arrives on stdin, 64 KiB at a time. Prints the status, then the response body.
Usage: stream_put.py URL < body"""
import sys

import requests


def body():
    while True:
        chunk = sys.stdin.buffer.read1(65536)
        if not chunk:
            return
        yield chunk


r = requests.put(sys.argv[1], data=body())
print(r.status_code)
print(r.text)
