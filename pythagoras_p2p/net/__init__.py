"""What crosses a machine's boundary: wire messages, one-shot requests, security (keys, CURVE,
ZAP), chunked transfer of values, mDNS, the files a node keeps in its home."""
