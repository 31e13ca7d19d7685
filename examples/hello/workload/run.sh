#!/bin/sh
# A trivial workload: it knows nothing of airlock, only its output folder.
set -eu
echo "$GREETING" > /data/out/greeting/greeting.txt
uname -sr >> /data/out/greeting/greeting.txt
echo "workload done"
exit 0
