#!/bin/sh
trap '' TERM INT HUP
setsid /bin/sh -c 'trap "" TERM; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &
echo "never-ends: started"
while :; do sleep 1; done
